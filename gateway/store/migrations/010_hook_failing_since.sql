-- Auto-disable (issue 14): when the hook's unbroken run of failed attempts began. Set by the
-- first failed attempt after a success (or since the hook was created), cleared by a success
-- (both recorded with the attempt: gateway/store/sqlite/deliveries.py record_outcomes). A hook
-- whose run began `[delivery] disable_after` ago, and that was not edited since, is disabled
-- by its next failed attempt (gateway/delivery/control.py). NULL: its last attempt succeeded.
ALTER TABLE hooks ADD COLUMN failing_since REAL;
