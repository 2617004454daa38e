"""Measuring the lessons: the code behind compare.py and bench.py, one idea per module.

    counts       exact trainable counts of every variant, on the meta device (no weights)
    process      the one way to run work in a fresh process and read back its figures (a JSON file)
    lesson_runs  run lessons' main() there and collect each run's results.json (+ step timing)
    callbacks    TrainerCallbacks a measured run adds: progress lines, step timing and padding
    scoring      the one answer scorer (exact match, ROUGE-L, BLEU-4, forgetting), shared with mini_world
    sweep        compare --train: every variant (times learning-rate factors), runs reused when finished
    report       compare's report.md / report.json; plots: its figures
    layouts      bench: batch layouts, alternated runs, medians with their range
    rows         bench: real-length training rows, padding efficiency of a batch order
    machine      bench: the machine, its load, its measured matmul limit (gemm: the timings)
    flops        useful training FLOPs per row
    precision, generation, memory, gpu_suite: bench's other modes
    inside       what the lessons' look_inside.py scripts share: load a run, prompts, the figure

A lesson's train.py, infer.py and from_scratch.py never import this package; it reaches them only through
common.lessons (REGISTRY, CONTRACT). Only the optional look_inside.py scripts import measure.inside.
"""
