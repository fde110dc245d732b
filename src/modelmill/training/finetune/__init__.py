"""Shared machinery of the deep fine-tuning templates: the training loop, resume and incremental
starts, outputs and evaluation, ONNX export, and the Params fields they have in common.
"""
