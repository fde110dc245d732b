"""The keys of a checkpoint's metadata (checkpoint.json), named once: templates and the loop write
them; resume, evaluation and prediction read them. Light (no torch): predictors' faces import it.
"""

TEMPLATE_KEY = "template"  # the template that trained it
CONFIG_KEY = "config"  # what the predictor needs to rebuild the model (architecture, sizes)
CONCEPTS_KEY = "concepts"  # the output rows, in order
PARAMS_KEY = "params"  # the template's Params as trained
FINGERPRINT_KEY = "fingerprint"  # identifies one training across worker restarts
VALIDATION_IDS_KEY = "validation_ids"  # inputs held out of training, evaluated after it
LOOP_KEY = "loop"  # the loop state (epochs done, best epoch, history)
OPTIMIZER_KEY = "optimizer"  # the optimizer state's non-tensor part
