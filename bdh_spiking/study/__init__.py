"""bdh-study: three experiments on the plastic working memory of the spiking BDH.

1. Synapses that carry concepts (``selectivity``): per-token increments of the neuron-to-neuron
   state sigma and of the executed x-neuron -> residual synapses; AUROC against a concept's
   presence, a circular-shift null, Benjamini-Hochberg FDR (``statistics``).
2. Is the memory in the synapses? (``memory``, ``memory_stats``): next-byte loss on repeated words,
   paired by word, against a scrambled context; lesion, frozen, reset and decaying plasticity.
3. Is the activity biological? (``rates``): firing rates in Hz, silent fractions, sparsity.
The brian2 biophysical network repeats a short window of each (``biophysical``). ``runner`` runs
them in order; ``figures`` draws, ``report`` writes results.json and report.md from it.

Definitions and statistical choices: docs/study.md. Everything here is deterministic given the
seed; every number written to report.md comes from results.json of the same run.
"""

from .activity import Activity, dense_activity, residual_inputs, spiking_activity
from .biophysical import biophysical_runs, biophysical_status, passage_window
from .concepts import (DEFAULT_CONCEPTS, concept_labels, concept_occurrences, concept_pattern, load_inputs,
                       parse_concepts)
from .memory import (BASELINE, LESION, MIN_WORD_LEN, collect_words, replace_first_occurrences, token_losses,
                     word_groups, word_units)
from .memory_stats import ci95, hold_time, memory_table, paired_analysis, tau_half, unpaired_difference
from .rates import CORTEX_BAND_HZ, CORTEX_REFERENCES, PAPER_SPARSITY, rates_summary
from .report import render_report, summary_lines
from .runner import run_study
from .selectivity import (increment_scores, increment_selectivity, pair_norms, sigma_selectivity,
                          summarize_selectivity, synapse_of, top_overlap, weight_trajectory)
from .settings import StudySettings
from .statistics import (auroc_binary, auroc_dense, auroc_sparse, benjamini_hochberg, label_columns,
                         null_reference, pooled_null_pvalues, select, shift_offsets, strata_of)

__all__ = [
    "StudySettings", "run_study", "summary_lines", "render_report", "load_inputs", "DEFAULT_CONCEPTS",
    "parse_concepts", "concept_pattern", "concept_occurrences", "concept_labels", "shift_offsets", "label_columns",
    "auroc_sparse", "auroc_dense", "auroc_binary", "null_reference", "pooled_null_pvalues", "benjamini_hochberg",
    "strata_of", "select", "Activity", "residual_inputs", "dense_activity", "spiking_activity", "pair_norms",
    "increment_selectivity", "sigma_selectivity", "summarize_selectivity", "top_overlap", "weight_trajectory",
    "synapse_of", "increment_scores", "MIN_WORD_LEN", "word_units", "token_losses", "word_groups", "collect_words",
    "memory_table", "paired_analysis", "hold_time", "tau_half", "ci95", "unpaired_difference", "BASELINE", "LESION",
    "replace_first_occurrences", "CORTEX_REFERENCES", "CORTEX_BAND_HZ", "PAPER_SPARSITY", "rates_summary", "biophysical_status",
    "passage_window", "biophysical_runs",
]
