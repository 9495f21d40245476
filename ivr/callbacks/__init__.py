"""Virtual hold: the wait estimator and the callback policy (pure; "now" is always passed in)."""
