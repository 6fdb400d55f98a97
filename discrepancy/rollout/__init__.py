"""Sampling engines: how a step's G completions per prompt are drawn (`Rollouts`).

`samplers` names the three (transformers' ``generate``, our token ``loop``, the CUDA-graph ``graphs``) and checks
that the one asked for can serve a model; `draw` is the token draw our loops share, `kv_reserve` the KV cache they
write in place. A run picks its sampler once, in its speed plan (`discrepancy.trainers.speed`).
"""
