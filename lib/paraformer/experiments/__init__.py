"""The experiments behind the notebooks: profiles (how big each experiment is), the sweeps and comparisons that
train the runs, the statistics that turn their numbers into verdicts, and one module per paper experiment
(compression, expansion)."""

from .profiles import (COMPARISONS, PROFILES, Comparison, Profile, authors_variant, get_comparison, get_profile,
                       profile_record)
from .accuracy import AccuracyClaim, accuracy_table, judge_claims, verdict_table
from .stats import (VERDICTS, Verdict, all_of, holm, judge, judge_family, mcnemar,
                    paired_difference, paired_minimum_detectable, render)
from .sweeps import (DEPTH_FINDINGS, compare_with_paper, convergence_summary, depth_findings, depth_sweep_claims,
                     layer_sweep_claims, learning_curves, method_label, run_comparison, run_sweep, time_to_target,
                     versus_vit_claims, versus_vit_table)
from .baselines import (grid_table, learning_rate_grid, run_compute_matched_vit, run_tuned_comparison,
                        tuning_changes)
