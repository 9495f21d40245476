"""Built-in prompts of the callback offer (queue node) and the ``callback_cancel`` node, in English and
Spanish like the sample flows; a flow overrides one by defining a prompt of the same name (and must, for
its other languages). The wait and the number are spoken from pre-rendered pieces: ``number_0`` …
``number_60`` for minutes, ``digit_*`` for the read-back and ``pause`` between its groups, so no call ever
synthesises audio.
"""

from __future__ import annotations

CALLBACK_TEXTS: dict[str, dict[str, str]] = {
    "callback_wait_about": {"en": "Your wait is about", "es": "Su tiempo de espera es de unos"},
    "callback_wait_to": {"en": "to", "es": "a"},
    "callback_wait_minutes": {"en": "minutes.", "es": "minutos."},
    "callback_wait_long": {"en": "Your wait is about an hour or more.",
                           "es": "Su tiempo de espera es de una hora o más."},
    "callback_offer": {
        "en": "To be called back when it is your turn, without losing your place in line, press 1. "
              "Or stay on the line.",
        "es": "Para que le llamemos cuando sea su turno, sin perder su lugar en la fila, oprima 1. "
              "O permanezca en la línea.",
    },
    "callback_confirm_number": {"en": "We will call you at", "es": "Le llamaremos al"},
    "callback_confirm_choice": {"en": "If that is right, press 1. To give another number, press 2.",
                                "es": "Si es correcto, oprima 1. Para dar otro número, oprima 2."},
    "callback_confirm_only": {"en": "If that is right, press 1.", "es": "Si es correcto, oprima 1."},
    "callback_enter_number": {
        "en": "Please enter the number we should call, with the area code, then press pound.",
        "es": "Marque el número al que debemos llamarle, con el código de área, y luego la tecla numeral.",
    },
    "callback_entered_choice": {"en": "If that is right, press 1. To enter it again, press 2.",
                                "es": "Si es correcto, oprima 1. Para marcarlo de nuevo, oprima 2."},
    "callback_refused_short": {
        "en": "We cannot call emergency numbers or short codes. Please give a full phone number.",
        "es": "No podemos llamar a números de emergencia ni a números cortos. Dé un número completo.",
    },
    "callback_refused_invalid": {"en": "That is not a valid phone number.",
                                 "es": "Ese no es un número de teléfono válido."},
    "callback_refused_premium": {"en": "We cannot call premium-rate or special service numbers.",
                                 "es": "No podemos llamar a números de tarificación especial."},
    "callback_refused_international": {"en": "We can only call numbers in this country.",
                                       "es": "Solo podemos llamar a números de este país."},
    "callback_refused_denied": {"en": "We cannot call that number.", "es": "No podemos llamar a ese número."},
    "callback_refused_caps": {"en": "We cannot take another callback request for that number right now.",
                              "es": "No podemos aceptar otra solicitud de llamada para ese número ahora."},
    "callback_no_number": {
        "en": "Sorry, we could not take a number to call you back. Please stay on the line for the next agent.",
        "es": "Lo sentimos, no pudimos tomar un número para llamarle. Permanezca en la línea, por favor.",
    },
    "callback_confirmed": {
        "en": "Thank you. Your callback is confirmed. We will call you when it is your turn, and you keep "
              "your place in line. Goodbye.",
        "es": "Gracias. Su llamada de regreso está confirmada. Le llamaremos cuando sea su turno, y conserva "
              "su lugar en la fila. Adiós.",
    },
    "callback_unavailable": {
        "en": "Sorry, we cannot call you back at this time. Please stay on the line for the next agent.",
        "es": "Lo sentimos, no podemos devolverle la llamada en este momento. Permanezca en la línea, por favor.",
    },
    "callback_cancel_ask": {
        "en": "You have a callback booked. To cancel it, press 1. To keep it, press 2.",
        "es": "Tiene una llamada de regreso pendiente. Para cancelarla, oprima 1. Para conservarla, oprima 2.",
    },
    "callback_cancel_done": {"en": "Your callback has been cancelled.",
                             "es": "Su llamada de regreso ha sido cancelada."},
    "callback_cancel_kept": {"en": "Your callback is still booked.",
                             "es": "Su llamada de regreso sigue pendiente."},
    "callback_cancel_none": {"en": "There is no callback booked for your number.",
                             "es": "No hay ninguna llamada de regreso pendiente para su número."},
}

#: ``callback: {schedule: true}``: "as soon as possible, or choose a time", and the pieces a slot is said
#: with ("press 2 for tomorrow at 9 thirty a.m."); hours come from ``number_1`` … ``number_12``.
SCHEDULE_TEXTS: dict[str, dict[str, str]] = {
    "callback_schedule_choice": {
        "en": "To be called back as soon as possible, press 1. To choose a time, press 2.",
        "es": "Para que le llamemos lo antes posible, oprima 1. Para elegir una hora, oprima 2.",
    },
    "callback_slot_press": {"en": "Press", "es": "Oprima"},
    "callback_slot_for": {"en": "for", "es": "para"},
    "callback_slot_today": {"en": "today", "es": "hoy"},
    "callback_slot_tomorrow": {"en": "tomorrow", "es": "mañana"},
    "callback_slot_at": {"en": "at", "es": "a las"},
    "callback_slot_oclock": {"en": "o'clock", "es": "en punto"},
    "callback_slot_thirty": {"en": "thirty", "es": "y media"},
    "callback_slot_am": {"en": "a.m.", "es": "de la mañana"},
    "callback_slot_pm": {"en": "p.m.", "es": "de la tarde"},
    "callback_scheduled": {"en": "Thank you. Your callback is booked for",
                           "es": "Gracias. Su llamada de regreso está programada para"},
    "callback_scheduled_end": {"en": "Goodbye.", "es": "Adiós."},
}
CALLBACK_TEXTS.update(SCHEDULE_TEXTS)

MAX_SPOKEN_MINUTES = 60
"""Minutes are spoken up to this; a range reaching past it is "about an hour or more"."""

#: ``number_N`` for the minutes of the wait; espeak-ng says the numeral in the flow's language.
NUMBER_TEXTS: dict[str, dict[str, str]] = {f"number_{n}": {"*": str(n)} for n in range(MAX_SPOKEN_MINUTES + 1)}

#: A short silence between the groups of a read-back ("201, 555, 0123"), in espeak-ng's phoneme notation.
PAUSE_TEXT: dict[str, dict[str, str]] = {"pause": {"*": "[[_:_:_:]]"}}
