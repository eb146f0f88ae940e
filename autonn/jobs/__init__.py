"""autonn's job kinds, one module each: train_supernet, latency_table, search, finetune.

Each is a thin orchestration of the domain modules (train, predictors, latency, search, export)
around the store and autonn's tables. Every artifact is keyed by the job id that makes it, so a
redelivered job finds what an earlier attempt wrote and resumes rather than duplicates.
"""
