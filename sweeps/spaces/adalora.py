"""AdaLoRA (peft): target rank r (init_r defaults to ⌈1.5·r⌉) and the budget schedule, with tinit/tfinal as
fractions of the run (``tinit_frac`` / ``tfinal_frac``, around the defaults 0.1 / 0.5 taken from the papers'
GLUE settings) so one space fits runs of any length; ΔT as steps."""

from ray import tune

from sweeps.spaces.common import ADAPTER

SPACE = {
    **ADAPTER,
    "tinit_frac": tune.choice([0.0, 0.1, 0.2]),
    "tfinal_frac": tune.choice([0.3, 0.5, 0.7]),
    "delta_t": tune.choice([1, 5, 10]),
}
