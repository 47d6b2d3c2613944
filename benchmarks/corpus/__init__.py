"""The real-model corpus behind benchmarks/onnx_corpus.py and tests/formats/test_real_models.py.

models    what each model is, where it comes from (a file inside an installed package, or
          built here by torch / skl2onnx into a cache directory) and the inputs it takes
builders  the models we export ourselves (a BERT-style encoder, an sklearn pipeline)
checks    comparisons: two ModelProtos, onnxruntime outputs, control-flow weights
worker    one preset on one model, run in a child process (crash- and time-isolated)
"""
