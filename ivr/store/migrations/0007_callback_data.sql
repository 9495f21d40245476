-- The caller's data for the agent (a queue node's `data: [ACCOUNT]`), kept with a callback request so the
-- dialer hands it over when the customer is called back (issue 17). A JSON list of [name, value, sensitive]:
-- a sensitive value is sealed with its call's key (sealed:v1:...) when `privacy:` is on, else masked; the
-- others are in clear, like the request's number, and overwritten ('[]') when the request is erased.
ALTER TABLE callback_requests ADD COLUMN agent_data TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(agent_data));
