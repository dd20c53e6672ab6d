"""An independent computation of response-token logprobs with plain transformers (fp32)."""

from __future__ import annotations

import numpy as np


def transformers_logprobs(model_dir, samples) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out = []
    with torch.no_grad():
        for s in samples:
            ids = torch.as_tensor(s.token_ids, dtype=torch.long)[None]
            logits = model(input_ids=ids).logits[0].double()
            # logits[t] predicts token t+1
            lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            out.append(lp.numpy()[s.response_positions - 1])
    return out
