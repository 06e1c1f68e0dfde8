"""An evaluation run, from what ``s2o-eval run`` was asked (``request``) to the run directory it writes
(``rundir``): the task selection, the lm-eval model, the sample loop, its sessions and its processes."""
