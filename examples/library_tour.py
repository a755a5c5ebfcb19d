"""A tour of the library without the scripts: sample, score, count, on the bundled model.

    python examples/library_tour.py          (about 20 s on a laptop CPU)

The same functions the stages use: the one model loader, the dataset registry, the prompt
template, our sampling loop with per-sample seeds, math-verify scoring and the statistics.
tests/test_examples.py runs it.
"""

from rl_onoff.data import load_dataset
from rl_onoff.decoding import SamplingParams
from rl_onoff.generation import generate, sample_seed
from rl_onoff.models import load_model
from rl_onoff.stats import mean_interval, pass_at_k
from rl_onoff.tasks import build_prompt, encode_prompt, score_many

SAMPLES = 4

model, tokenizer = load_model("tiny-arith", device="cpu")
records = load_dataset("arith", split="test", num_examples=12, levels=[1, 2])
prompts = [encode_prompt(build_prompt(r["question"], tokenizer), tokenizer, "auto")
           for r in records]
rows = [(q, s) for q in range(len(records)) for s in range(SAMPLES)]
generated = generate(model, tokenizer, [prompts[q] for q, _ in rows], SamplingParams(1.0), 64,
                     seeds=[sample_seed(0, records[q]["id"], s) for q, s in rows])
texts = [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generated]
scores = score_many(texts, [records[q]["answer"] for q, _ in rows])

correct = [sum(scores[i * SAMPLES + s].reward for s in range(SAMPLES)) for i in range(len(records))]
accuracy = mean_interval([c / SAMPLES for c in correct])
pass2 = mean_interval([pass_at_k(SAMPLES, int(c), 2) for c in correct])
print(f"first response: {texts[0]!r}")
print(f"avg@{SAMPLES} {accuracy.mean:.3f} [{accuracy.lo:.3f}, {accuracy.hi:.3f}], "
      f"pass@2 {pass2.mean:.3f} over {len(records)} questions")
