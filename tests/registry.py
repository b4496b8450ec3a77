"""Per-experiment test arguments, in one place: per data family, what makes a run take seconds (`tiny`), inputs for
`predict`, and what memorising one batch needs (`overfit`); then what is particular to one experiment of a family (its
pretrained parts as tiny local models, its dropout). `family(name)` combines them for a config."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# Datasets in their real formats, written once per test process (see `fixture_data`), outside the repository.
FIXTURES = Path(tempfile.gettempdir()) / f"litlab-fixtures-{os.getpid()}"

# Memorising one batch of images: the same images every step, hard targets, AdamW at a constant rate.
IMAGE_OVERFIT = [
    "--data.augment=false",
    "--model.label_smoothing=0",
    "--model.optimizer=AdamW",
    "--model.optimizer.lr=3e-3",
]

# Per data family: arguments that make a run take seconds, inputs for `predict`, and what memorising a batch needs.
FAMILIES = {
    "datamodules.xor.XorData": {
        "tiny": ["--data.train_size=2048", "--data.val_size=512", "--data.test_size=512", "--data.batch_size=256"],
        "predict": ["--data.predict_points=[[0.5, -1.0], [2, 3]]"],
    },
    "datamodules.arithmetic.ArithmeticData": {
        "tiny": [
            "--data.digits=2",
            "--data.train_size=512",
            "--data.val_size=64",
            "--data.test_size=64",
            "--data.batch_size=64",
        ],
        "predict": ['--data.predict_expressions=["12+34", "9-99"]'],
    },
    "datamodules.fashion_mnist.FashionMNISTData": {
        "tiny": [
            f"--data.data_dir={FIXTURES / 'fashion'}",
            "--data.download=false",
            "--data.val_size=200",
            "--data.batch_size=64",
        ],
        "predict": [f"--data.predict_files=[{FIXTURES / 'grey.png'}, {FIXTURES / 'colour.jpg'}]"],
        "overfit": IMAGE_OVERFIT,
    },
    "datamodules.cifar10.CIFAR10Data": {
        "tiny": [
            f"--data.data_dir={FIXTURES / 'cifar10'}",
            "--data.download=false",
            "--data.val_size=100",
            "--data.batch_size=32",
        ],
        "predict": [f"--data.predict_files=[{FIXTURES / 'grey.png'}, {FIXTURES / 'colour.jpg'}]"],
        "overfit": IMAGE_OVERFIT,
    },
    "datamodules.char_corpus.CharCorpusData": {
        "tiny": [
            f"--data.text_files=[{FIXTURES / 'book.txt'}]",
            "--data.context_len=48",
            "--data.batch_size=16",
            "--model.embed_dim=32",
            "--model.hidden=64",
            "--model.heads=2",
            "--model.context_len=64",
        ],
        "predict": ['--data.prompts=["The little", ""]', "--model.generate_chars=20"],
        "overfit": ["--data.jitter=false", "--data.batch_size=8", "--model.dropout=0", "--model.optimizer.lr=1e-2"],
    },
    "datamodules.imdb.ImdbData": {
        "tiny": [
            f"--data.data_dir={FIXTURES / 'imdb'}",
            "--data.download=false",
            "--data.val_size=40",
            "--data.max_len=100",
            "--data.batch_size=16",
        ],
        "predict": ['--data.predict_texts=["A wonderful, moving film!", "Boring. A waste of time."]'],
        "overfit": ["--model.optimizer.weight_decay=0"],
    },
}
FAMILIES["datamodules.spelling.SpellingData"] = {
    "tiny": [
        f"--data.text_files=[{FIXTURES / 'book.txt'}]",
        "--data.tokenizer=train",
        "--data.vocab_size=300",
        "--data.batch_size=16",
        "--data.val_fraction=0.03",
        "--data.test_fraction=0.03",
        "--model.init_args.pretrained=null",
        "--model.init_args.d_model=32",
        "--model.init_args.layers=1",
        "--model.init_args.heads=2",
        "--model.init_args.ffn_dim=64",
        "--trainer.val_check_interval=1.0",  # the config validates every 1,200 steps: here once per epoch
        "--trainer.check_val_every_n_epoch=1",
    ],
    "predict": ['--data.predict_texts=["The litle girl walk to school.", "The rain fell."]'],
    "overfit": [
        "--model.init_args.dropout=0",
        "--model.init_args.d_model=64",
        "--model.init_args.ffn_dim=128",
        "--model.optimizer.lr=3e-3",
        "--data.clean_fraction=1.0",
        "--data.max_chars=80",  # a batch of short segments
        "--trainer.max_epochs=600",  # post-norm BARTs from scratch need about 200 epochs of this batch
    ],
}
FAMILIES["datamodules.fruit_detection.FruitDetectionData"] = {
    "tiny": [
        f"--data.data_dir={FIXTURES / 'fruit'}",
        "--data.val_size=4",
        "--data.image_size=128",
        "--data.batch_size=2",
    ],
    "predict": [f"--data.predict_files=[{FIXTURES / 'colour.jpg'}, {FIXTURES / 'grey.png'}]"],
    "overfit": [
        "--model.init_args.dropout=0",
        "--model.optimizer=AdamW",
        "--model.optimizer.lr=1e-3",
        "--data.batch_size=2",
        "--data.augment=false",
    ],
}
# Arguments particular to one experiment of a family (its pretrained parts, as tiny local models).
EXPERIMENT_TINY = {
    # no download (the real weights path is tested offline in test_images.py), and CIFAR's own 32 px
    **{
        name: ["--model.weights=null", "--model.image_size=32"]
        for name in ("cifar10_resnet18_finetune", "cifar10_resnet18_notebook", "cifar10_resnet18_scratch")
    },
    "imdb_transformer": [
        f"--data.tokenizer={FIXTURES / 'tiny-bert'}",
        f"--model.init_args.embeddings_from={FIXTURES / 'tiny-bert'}",
        "--model.init_args.hidden=64",
    ],
    "imdb_distilbert": [
        f"--data.tokenizer={FIXTURES / 'tiny-distilbert'}",
        f"--model.init_args.pretrained={FIXTURES / 'tiny-distilbert'}",
    ],
    "fruit_fast_rcnn": [
        "--model.init_args.arch=resnet18",
        "--model.init_args.weights=null",
        "--model.init_args.fc_dim=64",
    ],
    "fruit_fast_rcnn_scratch": ["--model.init_args.fc_dim=64"],
    "fruit_faster_rcnn": ["--model.init_args.weights=null", "--model.init_args.image_size=128"],
    "spell_bart": [
        f"--data.tokenizer={FIXTURES / 'tiny-bart'}",
        f"--model.init_args.pretrained={FIXTURES / 'tiny-bart'}",
    ],
    "imdb_bilstm": ["--model.init_args.embed_dim=32", "--model.init_args.hidden=32"],
    **{
        name: ["--model.init_args.embed_dim=32", "--model.init_args.hidden=64"]
        for name in ("imdb_self_attention", "imdb_transformer_scratch")
    },
    "imdb_fasttext": ["--model.init_args.embed_dim=16", "--model.init_args.buckets=4096"],
    "imdb_region_cnn": ["--model.init_args.embed_dim=16"],
}


def config(name: str) -> str:
    return str(CONFIG_DIR / f"{name}.yaml")


# What memorising one batch needs in one experiment of a family (the word models' dropout; DistilBERT has none to set).
EXPERIMENT_OVERFIT = {
    **{
        name: ["--model.init_args.dropout=0"]
        for name in ("imdb_bilstm", "imdb_self_attention", "imdb_transformer", "imdb_transformer_scratch")
    },
    **{name: ["--model.net.init_args.dropout=0"] for name in ("fashion_fcn", "fashion_cnn", "fashion_cnn_bn")},
    **{name: ["--model.vector_lr_scale=1"] for name in ("cifar10_fast", "fashion_resnet")},
}


def family(name: str) -> dict:
    data_class = yaml.safe_load(Path(config(name)).read_text())["data"]["class_path"]
    assert data_class in FAMILIES, f"add {data_class} to tests/registry.py FAMILIES"
    described = FAMILIES[data_class]
    return {
        **described,
        "tiny": described["tiny"] + EXPERIMENT_TINY.get(name, []),
        "overfit": described.get("overfit", []) + EXPERIMENT_OVERFIT.get(name, []),
    }
