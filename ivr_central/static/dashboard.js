/* The contact-center dashboard: reads the filters from the URL (so a view can be shared), asks the
   dashboard API for its tables and draws them with Plotly. Hand-written, no build step, no inline script
   (the page's Content-Security-Policy forbids it). Every figure comes from the API as is: this file only
   formats and draws. */
"use strict";

(function () {
  const COLORS = {
    offered: "#495057", answered: "#0072B2", abandoned: "#D55E00", sl: "#009E73", asa: "#0072B2",
    target: "#6c757d", containment: "#009E73", requests: "#56B4E9", kept: "#0072B2", mae: "#CC79A7",
    bias: "#E69F00", csat: "#009E73", nps: "#0072B2", n: "#dee2e6",
  };
  const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
  const CONFIG = { displayModeBar: false, responsive: true, displaylogo: false };

  const params = new URLSearchParams(location.search);
  let meta = null;
  let filters = null; // the filters as the API resolved them (defaults filled in)
  const pending = new Set();

  // -- formatting ---------------------------------------------------------------------------------------
  const intFmt = new Intl.NumberFormat("en-US");
  function fmt(value, unit) {
    if (value === null || value === undefined) return "—";
    switch (unit) {
      case "share": return (value * 100).toFixed(1) + " %";
      case "s": return value.toFixed(1) + " s";
      case "points": return (value > 0 ? "+" : "") + value.toFixed(1);
      case "calls": return intFmt.format(value);
      case "n": return intFmt.format(value);
      default: return String(value);
    }
  }
  const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function dayLabel(iso) { // 2026-03-08 -> Sun 8 Mar (the date itself, no zone arithmetic)
    const [y, m, d] = iso.slice(0, 10).split("-").map(Number);
    const wd = new Date(Date.UTC(y, m - 1, d)).getUTCDay();
    return `${DAYS[wd]} ${d} ${MONTHS[m - 1]}`;
  }
  // -- the API ------------------------------------------------------------------------------------------
  function query(extra) {
    const q = new URLSearchParams();
    for (const k of ["since", "until", "zone", "by", "group", "rank", "heat"]) {
      if (params.get(k)) q.set(k, params.get(k));
    }
    const sites = params.getAll("sites").join(",");
    if (sites) q.set("sites", sites);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }
  async function getJSON(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) {
      location.href = "login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("signed out");
    }
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  function table(name, extra) { return getJSON(`api/${name}?${query(extra)}`); }
  function col(t, name) {
    const i = t.columns.indexOf(name);
    return t.rows.map((r) => r[i]);
  }

  // -- charts -------------------------------------------------------------------------------------------
  function layout(extra) {
    return Object.assign({
      font: { family: FONT, size: 13, color: "#212529" },
      margin: { l: 56, r: 24, t: 16, b: 48 },
      height: 300,
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      hovermode: "x unified",
      legend: { orientation: "h", y: -0.22, x: 0 },
      xaxis: { automargin: true, gridcolor: "#f1f3f5" },
      yaxis: { automargin: true, gridcolor: "#e9ecef", zeroline: true, zerolinecolor: "#ced4da", rangemode: "tozero" },
    }, extra || {});
  }
  function noData(el, text) {
    Plotly.purge(el);
    el.classList.add("empty");
    el.innerHTML = "";
    const p = document.createElement("p");
    p.className = "nodata";
    p.textContent = text || "No data for these sites and dates.";
    el.appendChild(p);
  }
  function draw(el, traces, lay) {
    el.classList.remove("empty");
    const old = el.querySelector(".nodata");
    if (old) old.remove();
    return Plotly.react(el, traces, layout(lay), CONFIG);
  }
  function xaxis(series) {
    // days and hours on a date axis at the site's wall-clock time (Plotly has no zones: the keys' local
    // time is drawn as is). The hour repeated when clocks go back falls on one x: its bars stack.
    const keys = col(series, "bucket");
    if (series.filters.by === "day") {
      return { x: keys, axis: { type: "date", tickformat: "%a %-d %b", hoverformat: "%a %-d %b %Y", gridcolor: "#f1f3f5" } };
    }
    return { x: keys.map((k) => `${k.slice(0, 10)} ${k.slice(11, 16)}`),
      axis: { type: "date", hoverformat: "%a %-d %b %H:%M", gridcolor: "#f1f3f5" } };
  }
  function sizes(ns) { // a point's size tells its n: the larger, the more calls or answers behind it
    const top = Math.max(1, ...ns);
    return ns.map((n) => (n ? 5 + 9 * Math.sqrt(n / top) : 0));
  }
  const has = (ns) => ns.some((n) => n > 0);
  function pct(vs) { return vs.map((v) => (v === null ? null : v * 100)); }
  function nText(ns) { return ns.map((n) => `n = ${intFmt.format(n)}`); }

  function targetLine(x, y, name) {
    return { x: [x[0], x[x.length - 1]], y: [y, y], mode: "lines", name, hoverinfo: "skip",
      line: { color: COLORS.target, dash: "dash", width: 2 } };
  }

  function drawSeries(s, targets, slThreshold) {
    const { x, axis } = xaxis(s);
    const offered = col(s, "offered");
    const el = (id) => document.getElementById(id);
    // traffic: answered and abandoned as bars, offered as a line over them
    if (!has(col(s, "offered_n"))) noData(el("chart-traffic"), "No calls reached the queue for these sites and dates.");
    else draw(el("chart-traffic"), [
      { x, y: col(s, "answered"), type: "bar", name: "Answered", marker: { color: COLORS.answered } },
      { x, y: col(s, "abandoned"), type: "bar", name: "Abandoned", marker: { color: COLORS.abandoned } },
      { x, y: offered, type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Offered (incl. exits and waiting)",
        line: { color: COLORS.offered, width: 2 }, marker: { size: 7 } },
    ], { barmode: "stack", bargap: 0.25, xaxis: axis, yaxis: { title: { text: "calls" }, rangemode: "tozero", gridcolor: "#e9ecef" } });

    const sl = col(s, "service_level"); const slN = col(s, "service_level_n");
    if (slThreshold) document.getElementById("sl-unit").textContent = `(% answered within ${slThreshold} s; target dashed)`;
    if (!has(slN)) noData(el("chart-sl"));
    else draw(el("chart-sl"), [
      { x, y: pct(sl), type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Service level", line: { color: COLORS.sl, width: 2 },
        marker: { size: sizes(slN) }, customdata: nText(slN), hovertemplate: "%{y:.1f} % (%{customdata})<extra></extra>", connectgaps: false },
      targetLine(x, targets.service_level * 100, `Target ${Math.round(targets.service_level * 100)} %`),
    ], { xaxis: axis, yaxis: { title: { text: "%" }, range: [0, 100], gridcolor: "#e9ecef" } });

    const asa = col(s, "asa"); const asaN = col(s, "asa_n");
    if (!has(asaN)) noData(el("chart-asa"));
    else draw(el("chart-asa"), [
      { x, y: asa, type: "bar", name: "ASA", marker: { color: COLORS.asa },
        customdata: nText(asaN), hovertemplate: "%{y:.1f} s (%{customdata})<extra></extra>" },
      targetLine(x, targets.asa, `Target ${targets.asa} s`),
    ], { xaxis: axis, yaxis: { title: { text: "seconds" }, rangemode: "tozero", gridcolor: "#e9ecef" } });

    const cont = col(s, "containment"); const contN = col(s, "containment_n");
    if (!has(contN)) noData(el("chart-containment"), "No IVR calls ended for these sites and dates.");
    else draw(el("chart-containment"), [
      { x, y: pct(cont), type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Containment", fill: "tozeroy",
        line: { color: COLORS.containment, width: 3 }, fillcolor: "rgba(0,158,115,0.12)",
        customdata: nText(contN), hovertemplate: "%{y:.1f} % (%{customdata})<extra></extra>" },
    ], { xaxis: axis, yaxis: { title: { text: "%" }, range: [0, 100], gridcolor: "#e9ecef" }, showlegend: false });

    const req = col(s, "callback_requests"); const kept = col(s, "callback_promise_kept");
    const keptN = col(s, "callback_promise_kept_n");
    if (!has(col(s, "callback_requests_n")) && !has(keptN)) noData(el("chart-callbacks"), "No callbacks for these sites and dates.");
    else draw(el("chart-callbacks"), [
      { x, y: req, type: "bar", name: "Requested", marker: { color: COLORS.requests } },
      { x, y: pct(kept), type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Promise kept (%)", yaxis: "y2",
        line: { color: COLORS.kept, width: 2 }, marker: { size: sizes(keptN) }, customdata: nText(keptN),
        hovertemplate: "%{y:.1f} % (%{customdata})<extra></extra>" },
    ], { xaxis: axis, yaxis: { title: { text: "requests" }, rangemode: "tozero", gridcolor: "#e9ecef" },
      yaxis2: { title: { text: "% kept" }, overlaying: "y", side: "right", range: [0, 100], tickmode: "linear",
        dtick: 25, showgrid: false },
      margin: { l: 56, r: 56, t: 16, b: 48 } });

    const maeN = col(s, "ewt_mae_n");
    if (!has(maeN)) noData(el("chart-ewt"), "No connected callbacks with a quoted wait for these sites and dates.");
    else draw(el("chart-ewt"), [
      { x, y: col(s, "ewt_mae"), type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Mean absolute error",
        line: { color: COLORS.mae, width: 2 }, marker: { size: sizes(maeN) }, customdata: nText(maeN), hovertemplate: "%{y:.1f} s (%{customdata})<extra></extra>" },
      { x, y: col(s, "ewt_bias"), type: "scatter", mode: "lines+markers", cliponaxis: false, name: "Bias",
        line: { color: COLORS.bias, width: 2, dash: "dot" }, hovertemplate: "%{y:+.1f} s<extra></extra>" },
    ], { xaxis: axis, yaxis: { title: { text: "seconds" }, gridcolor: "#e9ecef", rangemode: "normal" } });

    surveyChart(el("chart-csat"), x, axis, pct(col(s, "csat")), col(s, "csat_n"), COLORS.csat, "CSAT", "%", [0, 100]);
    surveyChart(el("chart-nps"), x, axis, col(s, "nps"), col(s, "nps_n"), COLORS.nps, "NPS", "points", [-100, 100]);
  }

  function surveyChart(el, x, axis, values, ns, color, name, unit, range) {
    if (!has(ns)) { noData(el, "No survey answers for these sites and dates."); return; }
    draw(el, [
      { x, y: ns, type: "bar", name: "Answers (n)", yaxis: "y2", marker: { color: COLORS.n },
        hovertemplate: "n = %{y}<extra></extra>" },
      { x, y: values, type: "scatter", mode: "lines+markers", cliponaxis: false, name, line: { color, width: 2 },
        marker: { size: sizes(ns) }, hovertemplate: `%{y:.1f} ${unit === "%" ? "%" : "points"}<extra></extra>` },
    ], { xaxis: axis, yaxis: { title: { text: unit }, range, gridcolor: "#e9ecef", zeroline: true },
      yaxis2: { title: { text: "answers" }, overlaying: "y", side: "right", rangemode: "tozero", tickmode: "auto",
        nticks: 5, showgrid: false },
      margin: { l: 56, r: 56, t: 16, b: 48 } });
  }

  function drawExits(t) {
    const el = document.getElementById("chart-exits");
    const rows = t.rows.filter((r) => r[1] > 0).slice(0, 12).reverse();
    if (!rows.length) { noData(el, "No caller hung up in the IVR for these sites and dates."); return; }
    draw(el, [{
      y: rows.map((r) => r[0]), x: rows.map((r) => r[1]), type: "bar", orientation: "h",
      marker: { color: COLORS.abandoned },
      text: rows.map((r) => `${r[1]} of ${intFmt.format(r[2])} (${fmt(r[3], "share")})`), textposition: "auto",
      hovertemplate: "%{y}: %{text}<extra></extra>",
    }], { hovermode: "closest", yaxis: { automargin: true, type: "category" },
      xaxis: { title: { text: "callers who hung up at the node" }, rangemode: "tozero", gridcolor: "#e9ecef" },
      margin: { l: 120, r: 24, t: 16, b: 48 }, showlegend: false });
  }

  function drawHeatmap(t) {
    const el = document.getElementById("chart-heatmap");
    const hours = t.columns.slice(1, 25);
    const z = t.rows.map((r) => r.slice(1, 25));
    const total = t.rows.reduce((a, r) => a + (r[25] || 0), 0);
    document.getElementById("heat-unit").textContent =
      t.measure === "offered" ? "(calls offered to the queue, by local hour)" : "(calls into the IVR, by local hour)";
    if (!t.rows.length || total === 0) { noData(el, "No calls for these sites and dates."); return; }
    draw(el, [{
      z, x: hours.map((h) => `${h}:00`), y: t.rows.map((r) => dayLabel(r[0])), type: "heatmap",
      colorscale: [[0, "#f8f9fa"], [0.15, "#d0ebff"], [0.5, "#4dabf7"], [1, "#1864ab"]],
      hoverongaps: false, xgap: 2, ygap: 2, texttemplate: "%{z}", textfont: { size: 11 },
      colorbar: { title: { text: "calls" }, thickness: 12 },
      hovertemplate: "%{y} %{x}: %{z} calls<extra></extra>",
    }], { hovermode: "closest", height: Math.max(220, 60 + 30 * t.rows.length),
      yaxis: { autorange: "reversed", type: "category", automargin: true },
      xaxis: { type: "category", side: "top", tickangle: 0 }, margin: { l: 90, r: 24, t: 40, b: 16 } });
  }

  const TOP_SITES = 20;
  function drawSites(t) {
    const spec = meta.kpis.find((k) => k.name === t.rank);
    const order = spec.better ? (spec.better === "high" ? "best first: highest" : "best first: lowest") : "largest first";
    const top = t.rows.length > TOP_SITES ? `; the top ${TOP_SITES} of ${t.rows.length}` : "";
    document.getElementById("rank-label").textContent = `${spec.label.toLowerCase()} (${order}${top})`;
    const el = document.getElementById("chart-sites");
    const i = t.columns.indexOf(t.rank);
    const rows = t.rows.filter((r) => r[i] !== null && r[i + 1] > 0); // a figure over nothing is no figure
    const scale = spec.unit === "share" ? 100 : 1;
    if (!rows.length) noData(el, `No ${spec.label} figure for these sites and dates.`);
    else {
      const shown = rows.slice(0, TOP_SITES).reverse(); // the best TOP_SITES; the table below has them all
      draw(el, [{
        y: shown.map((r) => r[1]), x: shown.map((r) => r[i] * scale), type: "bar", orientation: "h",
        marker: { color: COLORS.answered }, text: shown.map((r) => `${fmt(r[i], spec.unit)}  (n = ${intFmt.format(r[i + 1])})`),
        textposition: "auto", hovertemplate: "%{y}: %{text}<extra></extra>",
      }], { hovermode: "closest", height: Math.max(160, 60 + 44 * shown.length), showlegend: false,
        yaxis: { type: "category", automargin: true },
        xaxis: { title: { text: `${spec.label} (${spec.unit === "share" ? "%" : spec.unit})` }, gridcolor: "#e9ecef",
          rangemode: spec.unit === "points" || t.rank === "ewt_bias" ? "normal" : "tozero" },
        margin: { l: 120, r: 24, t: 8, b: 48 } });
    }
    // the table: every KPI per site, the ranked one highlighted
    const tbl = document.getElementById("sites-table");
    const head = ["#", "Site", "Group", ...meta.kpis.map((k) => k.label)];
    const thead = document.createElement("tr");
    head.forEach((h, j) => {
      const th = document.createElement("th");
      th.scope = "col";
      if (j >= 3) {
        const k = meta.kpis[j - 3];
        const b = document.createElement("button");
        b.type = "button"; b.className = "sort"; b.textContent = h; b.dataset.kpi = k.name;
        b.title = `Rank by ${h}`;
        if (k.name === t.rank) { th.className = "ranked"; th.setAttribute("aria-sort", k.better === "low" ? "ascending" : "descending"); }
        b.addEventListener("click", () => setRank(k.name));
        th.appendChild(b);
      } else th.textContent = h;
      thead.appendChild(th);
    });
    tbl.tHead.replaceChildren(thead);
    const body = tbl.tBodies[0];
    body.replaceChildren(...t.rows.map((r, rank) => {
      const tr = document.createElement("tr");
      tr.dataset.site = r[0];
      const cells = [String(rank + 1), r[1], r[2] || "—"];
      cells.forEach((c, j) => { const td = document.createElement(j === 1 ? "th" : "td"); if (j === 1) td.scope = "row"; td.textContent = c; tr.appendChild(td); });
      meta.kpis.forEach((k) => {
        const j = t.columns.indexOf(k.name);
        const td = document.createElement("td");
        td.className = "num" + (k.name === t.rank ? " ranked" : "");
        td.dataset.kpi = k.name;
        td.dataset.value = r[j] === null ? "" : String(r[j]);
        td.dataset.n = String(r[j + 1]);
        td.textContent = fmt(r[j], k.unit);
        if (k.unit !== "calls") {
          const n = document.createElement("small");
          n.textContent = ` n=${intFmt.format(r[j + 1])}`;
          td.appendChild(n);
        }
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  // -- tiles ----------------------------------------------------------------------------------------------
  const TILES = ["offered", "answered", "abandoned", "service_level", "asa", "containment", "callback_requests",
    "callback_completed", "callback_promise_kept", "ewt_mae", "csat", "nps"];
  function drawTiles(t) {
    const by = {};
    t.rows.forEach((r) => { by[r[0]] = { label: r[1], value: r[2], n: r[3], unit: r[4] }; });
    const box = document.getElementById("tiles");
    box.replaceChildren(...TILES.map((name) => {
      const k = by[name];
      const d = document.createElement("div");
      d.className = "tile";
      d.dataset.kpi = name;
      d.dataset.value = k.value === null ? "" : String(k.value);
      d.dataset.n = String(k.n);
      let status = "";
      let note = "";
      if (name === "service_level" && k.value !== null) {
        status = k.value >= t.targets.service_level ? "good" : "bad";
        note = `target ${Math.round(t.targets.service_level * 100)} % in ${t.sl_threshold_s} s`;
      } else if (name === "asa" && k.value !== null) {
        status = k.value <= t.targets.asa ? "good" : "bad";
        note = `target ${t.targets.asa} s`;
      } else if (name === "abandoned") {
        const rate = by.abandonment_rate;
        note = `rate ${fmt(rate.value, "share")} (excl. short)`;
      } else if (name === "containment") {
        note = `${fmt(by.ivr_calls.value, "calls")} calls into the IVR`;
      } else if (name === "ewt_mae" && by.ewt_bias.value !== null) {
        note = `bias ${by.ewt_bias.value > 0 ? "+" : ""}${fmt(by.ewt_bias.value, "s")} (> 0: quotes too short)`;
      } else if (name === "nps" && k.value !== null) {
        note = "−100 to +100";
      }
      if (status) d.classList.add(status);
      const label = document.createElement("div"); label.className = "tile-label"; label.textContent = k.label;
      const value = document.createElement("div"); value.className = "tile-value"; value.textContent = fmt(k.value, k.unit);
      const n = document.createElement("div"); n.className = "tile-n"; n.textContent = `n = ${intFmt.format(k.n)}`;
      d.append(label, value, n);
      if (k.value === null) { const e = document.createElement("div"); e.className = "tile-note"; e.textContent = "no data"; d.appendChild(e); }
      if (note) { const e = document.createElement("div"); e.className = "tile-note"; e.textContent = note; d.appendChild(e); }
      return d;
    }));
  }

  // -- filters ----------------------------------------------------------------------------------------------
  function fillFilters() {
    const sites = document.getElementById("sites");
    const chosen = new Set(params.getAll("sites").flatMap((s) => s.split(",")));
    sites.replaceChildren(...meta.sites.map((s) => {
      const o = document.createElement("option");
      o.value = s.site_id; o.textContent = `${s.name} (${s.site_id})`; o.selected = chosen.has(s.site_id);
      return o;
    }));
    sites.size = Math.min(6, Math.max(3, meta.sites.length));
    const group = document.getElementById("group");
    meta.groups.forEach((g) => {
      const o = document.createElement("option"); o.value = g; o.textContent = g; o.selected = params.get("group") === g;
      group.appendChild(o);
    });
    const zones = new Set(["UTC", ...meta.sites.map((s) => s.zone)]);
    document.getElementById("zones").replaceChildren(...[...zones].sort().map((z) => {
      const o = document.createElement("option"); o.value = z; return o;
    }));
    const rank = document.getElementById("rank");
    rank.replaceChildren(...meta.kpis.map((k) => {
      const o = document.createElement("option"); o.value = k.name; o.textContent = k.label; return o;
    }));
    rank.value = params.get("rank") || "offered";
    document.getElementById("heat").value = params.get("heat") || "offered";
    for (const k of ["rank", "heat"]) { // carried by the filter form too, so Apply keeps them
      const h = document.createElement("input"); h.type = "hidden"; h.name = k; h.id = `f-${k}`;
      h.value = document.getElementById(k).value; document.getElementById("filters").appendChild(h);
    }
    if (meta.viewer) {
      document.getElementById("viewer").textContent = `Signed in as ${meta.viewer.name}`;
      document.getElementById("logout").hidden = meta.viewer.via !== "session";
    }
  }

  function showFilters(f) {
    filters = f;
    document.getElementById("since").value = f.since;
    document.getElementById("until").value = f.until;
    document.getElementById("zone").value = params.get("zone") || "";
    document.getElementById("zone").placeholder = f.zone;
    document.querySelectorAll("input[name=by]").forEach((r) => { r.checked = r.value === f.by; });
    const names = f.site_ids.map((id) => (meta.sites.find((s) => s.site_id === id) || { name: id }).name);
    const who = f.sites.length ? names.join(", ") : (f.group ? `Group ${f.group} (${names.join(", ")})` : `All sites (${names.length})`);
    const span = f.since === f.until ? dayLabel(f.since) : `${dayLabel(f.since)} – ${dayLabel(f.until)} ${f.until.slice(0, 4)}`;
    document.getElementById("view").textContent = `${who} · ${span} · ${f.zone} · by ${f.by}`;
    document.title = `${who} · Contact center dashboard`;
    // quick ranges keep the sites and the zone
    const today = f.today || f.until;
    const quick = (days) => {
      const q = new URLSearchParams(query());
      const end = new Date(today + "T00:00:00Z");
      const start = new Date(end.getTime() - (days - 1) * 86400000);
      q.set("until", today); q.set("since", start.toISOString().slice(0, 10));
      if (days === 1) q.set("by", "hour");
      return "./?" + q.toString();
    };
    document.getElementById("q-today").href = quick(1);
    document.getElementById("q-7").href = quick(7);
    document.getElementById("q-30").href = quick(30);
    csvLinks();
  }

  function csvLinks() {
    document.querySelectorAll("a.csv").forEach((a) => {
      a.href = `api/${a.dataset.table}.csv?${query()}`;
      a.setAttribute("download", "");
      a.title = `Download the ${a.dataset.table} table as CSV`;
    });
  }

  function setParam(k, v) {
    params.set(k, v);
    history.replaceState(null, "", "./?" + params.toString());
    const h = document.getElementById(`f-${k}`);
    if (h) h.value = v;
    csvLinks();
  }

  async function setRank(name) {
    document.getElementById("rank").value = name;
    setParam("rank", name);
    await run("sites", async () => drawSites(await table("sites")));
  }

  // -- loading ----------------------------------------------------------------------------------------------
  function showError(msg) {
    const e = document.getElementById("error");
    e.textContent = msg;
    e.hidden = false;
  }

  async function run(name, fn) {
    pending.add(name);
    document.body.dataset.ready = "0";
    try {
      await fn();
    } catch (err) {
      if (err.message !== "signed out") showError(err.message);
      document.body.dataset.error = err.message;
    } finally {
      pending.delete(name);
      if (!pending.size) document.body.dataset.ready = "1";
    }
  }

  async function load() {
    await run("all", async () => {
      meta = await getJSON("api/meta");
      fillFilters();
      const summary = await table("summary");
      showFilters(summary.filters);
      drawTiles(summary);
      const [series, heat, exits, sites] = await Promise.all([table("series"), table("heatmap"), table("exits"), table("sites")]);
      drawSeries(series, summary.targets, summary.sl_threshold_s);
      drawHeatmap(heat);
      drawExits(exits);
      drawSites(sites);
    });
    document.getElementById("rank").addEventListener("change", (e) => setRank(e.target.value));
    document.getElementById("heat").addEventListener("change", async (e) => {
      setParam("heat", e.target.value);
      await run("heatmap", async () => drawHeatmap(await table("heatmap")));
    });
  }

  document.addEventListener("DOMContentLoaded", load);
})();
