"""One task per model type: the pieces that differ between model types (labels, data checks,
metrics, export outputs, web partial, sample data, the training objective). See contract.Task;
the registry's ModelTypeInfo points each model type at its task.
"""
