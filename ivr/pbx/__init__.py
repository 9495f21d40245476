"""The PBX seen from the appliance, pure: Asterisk queue state and its queue_log mapping."""
