-- The queue's hours schedule a callback must be dialled in (a queue node's `callback: {hours: NAME}`): the
-- dialer starts an attempt only while that schedule is open (holidays, overrides and the emergency switch
-- included), read from the flows at dial time; NULL: the calling windows alone decide.
ALTER TABLE callback_requests ADD COLUMN hours TEXT;
