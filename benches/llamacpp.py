"""llama.cpp on the same GGUF, for `cargo bench --bench local` to be read against.

Install llama.cpp's Python binding (it compiles llama.cpp; never with GGML_NATIVE on these CPUs, whose
AMX support crashes it):
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
    -DGGML_AVX512_VNNI=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    python3 -m pip install llama-cpp-python
Run: python3 benches/llamacpp.py MODEL.gguf [tokens]
"""
import sys
import time

from llama_cpp import Llama

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 128
t = time.time()
llm = Llama(model_path=path, n_ctx=2048, n_threads=2, n_batch=512, verbose=False, seed=0)
load = time.time() - t
prompt = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nExplain in a few paragraphs how B-trees and LSM-trees differ, and when a database "
    "should prefer one over the other.<|im_end|>\n<|im_start|>assistant\n"
)
tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
for run in range(2):
    llm.reset()
    t0 = time.time()
    first = None
    count = 0
    for _tok in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        count += 1
        if first is None:
            first = time.time()
        if count > n:
            break
    end = time.time()
    print(
        f"llama.cpp run {run}: load {load:.2f} s, prefill {len(tokens)} tokens in {(first - t0) * 1e3:.1f} ms "
        f"= {len(tokens) / (first - t0):.0f} tok/s, decode {n} tokens: {n / (end - first):.1f} tok/s"
    )
