from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="gpt_dist",
    version="0.1.0",
    description="DeepSpeed ZeRO pre-training, fine-tuning and Hugging Face conversion for GPT-2 models",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gpt_dist", "gpt_dist.*"]),
    package_data={"gpt_dist": ["resources/*"]},
    install_requires=[
        "torch>=2.4,<2.15",
        "deepspeed>=0.15",
        "numpy",
        "omegaconf>=2.3",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "wandb",
        "tiktoken",
        "sentencepiece",
        "tokenizers",
        "webdataset>=0.2.90",
        "datatrove>=0.10",
        "py3langid",
        "ftfy",
        "spacy",
        "orjson",
        "zstandard",
        "xxhash",  # document hashes: validation split, exact dedup, MinHash shingles
        "pyarrow",
        "safetensors",
        "transformers>=4.40",
        "peft>=0.11",  # LoRA adapters (lora.r > 0)
        "protobuf",  # reading SentencePiece model protos for the Hugging Face tokenizer export
    ],
    extras_require={
        "gpu": ["flash-attn>=2.5"],
        # trl: the test that its SFTTrainer accepts an exported directory
        "dev": ["pytest>=8", "pytest-timeout", "pytest-xdist", "trl"],
    },
    entry_points={"console_scripts": ["gpt-dist=gpt_dist.cli:main"]},
)
