"""Schedules: when they tick (`cadence`) and the loop that fires them (`scheduler`)."""
