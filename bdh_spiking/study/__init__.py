"""bdh-study: three experiments on the plastic working memory of the spiking BDH.

1. Synapses that carry concepts (``concept_test``): per-token increments of the executed x-neuron ->
   residual synapses S and of the read-path neuron-to-neuron state sigma = E_v^T S, and of their
   factors; a stratified rank statistic against a concept's presence, labels permuted within byte
   strata, maxT family-wise (``statistics``); how much of the y drive sigma explains (``sigma``).
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
from .concept_test import ProductFamily, family_scores, prepare_labels, run_concept_test, summarize_family
from .concepts import (DEFAULT_CONCEPTS, concept_forms, concept_labels, concept_occurrences, concept_pattern,
                       form_counts, load_inputs, parse_concepts)
from .memory import (BASELINE, LESION, MIN_WORD_LEN, collect_words, replace_first_occurrences, token_losses,
                     word_groups, word_units)
from .memory_stats import ci95, hold_time, memory_table, paired_analysis, tau_half, unpaired_difference
from .rates import CORTEX_BAND_HZ, CORTEX_REFERENCES, PAPER_SPARSITY, rates_summary
from .report import render_report, summary_lines
from .runner import run_study
from .selectivity import increment_scores, pair_norms, synapse_of, top_overlap, weight_trajectory
from .settings import StudySettings
from .sigma import read_path_sigma
from .statistics import (auroc_binary, auroc_dense, auroc_sparse, benjamini_hochberg, byte_strata, centered_ranks,
                         dense_codes, label_columns, maxt_adjusted, null_reference, pooled_null_pvalues, select,
                         shift_offsets, strata_of, stratified_label, stratified_scores)

__all__ = [
    "StudySettings", "run_study", "summary_lines", "render_report", "load_inputs", "DEFAULT_CONCEPTS",
    "parse_concepts", "concept_pattern", "concept_occurrences", "concept_labels", "shift_offsets", "label_columns",
    "auroc_sparse", "auroc_dense", "auroc_binary", "null_reference", "pooled_null_pvalues", "benjamini_hochberg",
    "strata_of", "select", "Activity", "residual_inputs", "dense_activity", "spiking_activity", "pair_norms",
    "top_overlap", "weight_trajectory", "concept_forms", "form_counts", "ProductFamily", "family_scores",
    "prepare_labels", "run_concept_test", "summarize_family", "read_path_sigma", "byte_strata", "centered_ranks",
    "dense_codes", "maxt_adjusted", "stratified_label", "stratified_scores",
    "synapse_of", "increment_scores", "MIN_WORD_LEN", "word_units", "token_losses", "word_groups", "collect_words",
    "memory_table", "paired_analysis", "hold_time", "tau_half", "ci95", "unpaired_difference", "BASELINE", "LESION",
    "replace_first_occurrences", "CORTEX_REFERENCES", "CORTEX_BAND_HZ", "PAPER_SPARSITY", "rates_summary",
    "biophysical_status",
    "passage_window", "biophysical_runs",
]
