"""The experiments behind the notebooks: profiles (how big each experiment is), the sweeps and comparisons that
train the runs, the statistics that turn their numbers into verdicts, and one module per paper experiment
(compression, expansion)."""

from .profiles import COMPARISONS, PROFILES, Comparison, Profile, get_comparison, get_profile, profile_record
from .stats import (VERDICTS, Verdict, difference_noise, holm, judge, mcnemar, paired_minimum_detectable, paired_p_value,
                    render)
from .sweeps import (compare_with_paper, convergence_summary, depth_sweep_summary, learning_curves, method_label,
                     run_comparison, run_sweep, time_to_target, trend_summary, versus_vit_summary, versus_vit_table)
