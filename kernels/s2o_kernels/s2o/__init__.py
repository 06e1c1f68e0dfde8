"""S2O's own planner: the ranking score (ranking.py), the Triton planner that lists every prefix key by
it (planner.py), and the walk forecast read from the planner's score histogram (forecast.py)."""
