"""IMDB: the aclImdb reader and both label modes, a train-only vocabulary, length bucketing, padding-invariant models
(packed LSTM, masked pooling, DistilBERT's attention mask), GloVe vectors, predict input and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, built, cli, config, debug_fit, fails_in_one_line, tiny
from text_fixtures import write_aclimdb
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from datamodules import imdb_reviews
from datamodules.imdb import ImdbData
from datamodules.imdb_reviews import RATINGS, read_reviews
from datamodules.text_batches import BucketBatchSampler, Ragged, Sequences, padding_fraction
from datamodules.tokenizers import WordTokenizer, words
from lightning_modules.components.positional import SinusoidalPositions
from lightning_modules.components.text_encoders import (
    AttentionClassifier,
    BagOfNgramsClassifier,
    BiLSTMClassifier,
    RegionCNNClassifier,
    real_tokens,
)
from lightning_modules.imdb import WordClassifier
from litlab.errors import LitlabError

TINY = tiny("imdb_bilstm")
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def test_reader_takes_labels_from_folders_and_scores_from_file_names():
    texts, binary, _ = read_reviews(FIXTURES / "imdb/aclImdb/train", "binary")
    _, rating8, _ = read_reviews(FIXTURES / "imdb/aclImdb/train", "rating8")
    assert len(texts) == 240 and binary.tolist() == [0] * 120 + [1] * 120  # the unsup folder is not read
    files = sorted((FIXTURES / "imdb/aclImdb/train/neg").glob("*.txt")) + sorted(
        (FIXTURES / "imdb/aclImdb/train/pos").glob("*.txt")
    )
    scores = [int(f.stem.split("_")[1]) for f in files]
    assert [RATINGS[c] for c in rating8.tolist()] == scores
    assert set(rating8[:120].tolist()) <= {0, 1, 2, 3} and set(rating8[120:].tolist()) <= {4, 5, 6, 7}


def test_word_tokeniser_drops_html_breaks_and_keeps_apostrophes():
    assert words("It WASN'T good.<br /><br />Awful!") == ["it", "wasn't", "good", "awful", "!"]


def test_word_ids_are_cut_at_max_len_and_unknown_words_share_one_id():
    tokenizer = WordTokenizer(["good", "bad"])  # ids 2 and 3
    ragged = Ragged.from_lists(tokenizer.encode(["Good, bad, BAD and good!", "", "meh bad"], max_len=4))
    assert ragged.tokens.tolist() == [2, 3, 3, 1, 1, 3] and ragged.tokens.dtype == torch.int64
    assert ragged.lengths.tolist() == [4, 0, 2]
    assert Ragged.from_lists([[], []]).tokens.shape == (0,)


def test_vocabulary_comes_from_training_reviews_only(tmp_path):
    write_aclimdb(tmp_path, {"train": 30, "test": 10})
    (tmp_path / "aclImdb/test/pos/999_9.txt").write_text("zyzzyva only in the test set")
    data = ImdbData(data_dir=tmp_path, download=False, val_size=10, seed=0)
    data.setup("fit")
    vocab = set(data.tokenizer.words)
    assert "zyzzyva" not in vocab
    val_only = {w for t in data.texts["val"] for w in words(t)} - {w for t in data.texts["train"] for w in words(t)}
    assert not (val_only & vocab)
    assert len(data.texts["train"]) == 50 and len(data.texts["val"]) == 10 and "test" not in data.texts  # not read
    data.setup("test")
    assert len(data.texts["test"]) == 21 and set(data.tokenizer.words) == vocab


def test_movie_runs_are_blocks_of_consecutive_ids_per_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_reviews, "MOVIE_RUN", 10)
    write_aclimdb(tmp_path, {"train": 25})
    _, binary, runs = read_reviews(tmp_path / "aclImdb/train", "binary")
    ids = [
        int(f.name.split("_")[0])
        for label in ("neg", "pos")
        for f in sorted((tmp_path / f"aclImdb/train/{label}").iterdir())
    ]
    # ids 0-9, 10-19 and 20-24 of each folder: three runs per polarity, none shared by neg and pos
    assert [[y, i // 10] for y, i in zip(binary.tolist(), ids)] == runs.tolist()


def test_movie_validation_holds_whole_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_reviews, "MOVIE_RUN", 10)
    write_aclimdb(tmp_path, {"train": 50, "test": 5})
    for label in ("neg", "pos"):  # each run's reviews name their movie
        for file in (tmp_path / f"aclImdb/train/{label}").iterdir():
            file.write_text(f"movie{label}{int(file.name.split('_')[0]) // 10} " + file.read_text())
    movie = {"train": set(), "val": set()}
    for seed in (0, 1):
        data = ImdbData(data_dir=tmp_path, download=False, val_size=25, val_split="movies", seed=seed)
        data.setup("fit")
        movies = {split: [t.split()[0] for t in data.texts[split]] for split in ("train", "val")}
        assert len(movies["val"]) == 25 and len(movies["train"]) == 75
        assert 10 <= int(data.targets["val"].sum()) <= 15  # negative and positive runs in turn
        assert len(set(movies["val"]) & set(movies["train"])) <= 1  # the run cut by val_size, at most
        assert 3 <= len(set(movies["val"])) <= 4
        for split in movie:
            movie[split] |= set(movies[split])
    assert movie["val"] & movie["train"]  # another seed, other runs
    with pytest.raises(LitlabError, match="val_split=movies needs --data.split=standard"):
        ImdbData(data_dir=tmp_path, download=False, split="notebook", val_split="movies").setup("fit")


def test_notebook_split_pools_and_resplits_nine_to_one(tmp_path):
    write_aclimdb(tmp_path, {"train": 25, "test": 25})
    data = ImdbData(data_dir=tmp_path, download=False, split="notebook", val_size=5)
    data.setup("fit")
    assert (len(data.texts["train"]), len(data.texts["val"]), len(data.texts["test"])) == (85, 5, 10)


def test_batches_pad_to_their_longest_review():
    tokens = torch.arange(1, 10)
    dataset = Sequences(Ragged(tokens, torch.tensor([2, 4, 3])), pad_id=0, multiple=1, y=torch.tensor([0, 1, 0]))
    batch = dataset.__getitems__([2, 0])
    assert batch["ids"].tolist() == [[7, 8, 9], [1, 2, 0]]
    assert batch["lengths"].tolist() == [3, 2] and batch["y"].tolist() == [0, 0] and batch["index"].tolist() == [2, 0]
    dataset.multiple = 4  # rounded up for tensor-core shapes
    assert dataset.__getitems__([2, 0])["ids"].tolist() == [[7, 8, 9, 0], [1, 2, 0, 0]]


def test_bucketing_covers_every_review_once_and_cuts_padding():
    lengths = torch.randint(5, 500, (2000,), generator=torch.Generator().manual_seed(0))
    plain = list(BatchSampler(RandomSampler(range(2000)), 32, drop_last=False))
    sampler = BucketBatchSampler(RandomSampler(range(2000)), 32, drop_last=False, lengths=lengths)
    bucketed = list(sampler)
    assert len(bucketed) == len(sampler) == len(plain)
    assert sorted(i for b in bucketed for i in b) == list(range(2000))
    assert padding_fraction(plain, lengths) > 0.4 and padding_fraction(bucketed, lengths) < 0.05
    # a sequential sampler (overfit_batches, evaluation) gives the same batches in the same order every epoch
    sequential = BucketBatchSampler(SequentialSampler(range(2000)), 32, drop_last=False, lengths=lengths)
    assert list(sequential) == list(sequential) and 0 in list(sequential)[0]


@pytest.mark.parametrize(
    "experiment",
    ["imdb_bilstm", "imdb_self_attention", "imdb_transformer", "imdb_transformer_scratch", "imdb_distilbert",
     "imdb_fasttext", "imdb_region_cnn"],
)  # fmt: skip
def test_padding_does_not_change_a_prediction(experiment):
    run = debug_fit(experiment)
    model, data = run.model.eval(), run.datamodule
    dataset = data._dataset("val")
    order = dataset.lengths.argsort(descending=True)
    long, short = int(order[0]), int(order[-1])
    assert dataset.lengths[long] > dataset.lengths[short] + 5
    together = dataset.__getitems__([long, short])
    alone = dataset.__getitems__([short])
    with torch.no_grad():
        padded = model(together["ids"], together["lengths"])[1]
        unpadded = model(alone["ids"], alone["lengths"])[0]
    torch.testing.assert_close(padded, unpadded, atol=1e-5, rtol=1e-4)


def test_hugging_face_tokens_stop_at_the_models_position_table():
    data = ImdbData(
        data_dir=FIXTURES / "imdb", download=False, tokenizer=str(FIXTURES / "tiny-distilbert"), max_len=512
    )
    long_review = " ".join(["wonderful"] * 400)
    lengths = data.encode([long_review, "A short one."]).lengths
    assert lengths[0] == data.tokenizer.tokenizer.model_max_length == 128 and lengths[1] < 30


def test_word_transformer_reads_reviews_longer_than_its_precomputed_positions():
    # `--data.max_len=1024` with imdb_transformer_scratch: the sinusoids hold 512 rows, a batch may be longer
    torch.manual_seed(0)
    net = AttentionClassifier(50, 16, 2, 1, 32, 2, 0.0, positions=True, max_len=8).eval()
    ids = torch.randint(2, 50, (2, 20))
    with torch.no_grad():
        out = net(ids, torch.tensor([20, 11]))
    assert out.shape == (2, 2) and out.isfinite().all()
    longer = SinusoidalPositions(16, max_len=32)
    torch.testing.assert_close(net.positions.encoding(20), longer.table[:20])  # the same encoding, computed on the fly
    assert net.positions.table.shape == (8, 16)  # the buffer keeps its size: ranks stay alike


def test_bag_of_ngrams_hashes_word_order_into_its_own_rows():
    bag = BagOfNgramsClassifier(vocab_size=10, embed_dim=4, classes=2, ngrams=3, buckets=7)
    rows = bag.ngram_ids(torch.tensor([[2, 3, 4, 0], [3, 2, 0, 0]]))  # "a b c" and "b a", padded
    words_, bigrams, trigrams = rows[:, :4], rows[:, 4:7], rows[:, 7:]
    assert words_.tolist() == [[2, 3, 4, 0], [3, 2, 0, 0]]
    assert ((bigrams[0, :2] >= 10) & (bigrams[0, :2] < 17)).all() and trigrams[0, 0] >= 10
    assert bigrams[0, 0] != bigrams[1, 0]  # "a b" and "b a" are different n-grams
    assert bigrams[0, 2] == 0 and bigrams[1, 1:].eq(0).all() and trigrams[0, 1] == 0  # n-grams into padding: padding
    plain = BagOfNgramsClassifier(vocab_size=10, embed_dim=4, classes=2, ngrams=1)
    assert plain.embed.num_embeddings == 10
    swapped = torch.tensor([[2, 3, 4], [4, 3, 2]])  # the same words in another order
    assert torch.equal(plain(swapped, torch.tensor([3, 3]))[0], plain(swapped, torch.tensor([3, 3]))[1])
    logits = bag(swapped, torch.tensor([3, 3]))
    assert not torch.allclose(logits[0], logits[1])


def test_bag_of_ngrams_averages_the_reviews_words_and_ngrams_never_its_padding():
    bag = BagOfNgramsClassifier(vocab_size=10, embed_dim=4, classes=2, ngrams=2, buckets=7).eval()
    short, padded = torch.tensor([[2, 3, 5]]), torch.tensor([[2, 3, 5, 0, 0, 0]])
    assert torch.allclose(bag(short, torch.tensor([3])), bag(padded, torch.tensor([3])))
    rows = bag.ngram_ids(short)[0]  # 3 words and 2 bigrams
    mean = bag.embed.weight[rows].mean(0)
    assert torch.allclose(bag(padded, torch.tensor([3]))[0], bag.head(mean))
    empty = bag(torch.zeros(1, 4, dtype=torch.long), torch.tensor([0]))  # nothing to average: the head's bias
    assert torch.allclose(empty[0], bag.head[1].bias)


def test_sparse_gradients_move_only_the_rows_a_batch_reads(capfd):
    bag = BagOfNgramsClassifier(vocab_size=10, embed_dim=4, classes=2, ngrams=2, buckets=7, sparse=True)
    before = bag.embed.weight.detach().clone()
    ids = torch.tensor([[2, 3, 5, 0]])
    F.cross_entropy(bag(ids, torch.tensor([3])), torch.tensor([1])).backward()
    assert bag.embed.weight.grad.is_sparse
    torch.optim.SGD(bag.parameters(), lr=1.0).step()
    moved = (bag.embed.weight != before).any(1).nonzero().flatten().tolist()
    assert moved == sorted(set(bag.ngram_ids(ids).flatten().tolist()) - {0})  # words and bigrams, never padding
    fit = ["fit", "--config", config("imdb_fasttext"), *tiny("imdb_fasttext"), *QUIET, "--trainer.max_epochs=1"]
    adamw = ["--model.optimizer=torch.optim.AdamW", "--model.optimizer.init_args.weight_decay=0"]
    fails_in_one_line(capfd, *fit, *adamw, naming="need an optimizer that takes them")
    fails_in_one_line(capfd, *fit, "--model.optimizer.init_args.weight_decay=0.01", naming="take no weight decay")


def test_region_cnn_is_a_convolution_over_one_hot_words_of_the_review_alone():
    torch.manual_seed(0)
    vocab, maps, region = 7, 5, 3
    net = RegionCNNClassifier(vocab, maps, classes=2, region=region, dropout=0.0).eval()
    with torch.no_grad():  # every word lowers every map: windows of padding alone, at the bias, would be the maxima
        net.embed.weight.abs_().neg_()
        net.bias.fill_(1.0)
    ids, lengths = torch.tensor([[3, 4, 5, 6, 0, 0], [2, 1, 3, 4, 5, 6]]), torch.tensor([4, 6])
    kernel = net.embed.weight.detach().view(region, vocab, maps).clone()  # (slot, word, map)
    kernel[0, 0] = 0  # the padding row
    with torch.no_grad():
        ours = net(ids, lengths)
        for review, length in enumerate(lengths.tolist()):
            one_hot = F.one_hot(ids[review, :length], vocab).float().T.unsqueeze(0)  # (1, vocab, words)
            conv = F.conv1d(one_hot, kernel.permute(2, 1, 0), net.bias, padding=region - 1)  # (1, maps, windows)
            assert conv.size(2) == length + region - 1  # from the window ending at the first word to the last's
            torch.testing.assert_close(ours[review], net.head(conv.relu().amax(2))[0])
        torch.testing.assert_close(ours[0], net(ids[:1, :4], lengths[:1])[0])  # padding read nowhere
        shuffled = torch.tensor([[6, 5, 4, 3]])  # the same words in another order: other windows
        assert not torch.allclose(net(shuffled, lengths[:1]), ours[:1])


def test_glove_vectors_start_the_embeddings_and_stay_frozen(tmp_path):
    glove = tmp_path / "glove.test.8d.txt"
    glove.write_text("wonderful " + " ".join(["0.5"] * 8) + "\nawful " + " ".join(["-0.5"] * 8) + "\n")
    run = cli(
        "fit",
        "--config",
        config("imdb_bilstm"),
        *TINY,
        f"--model.init_args.glove_path={glove}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        *QUIET,
    )
    model, vocab = run.model, run.datamodule.tokenizer
    assert model.hparams.embed_dim == 32 and model.learned["embed_dim"] == 8  # the vectors' width, for checkpoints
    assert model.net.embed.weight.shape[1] == 8 and not model.net.embed.weight.requires_grad
    assert torch.equal(model.net.embed.weight[vocab.ids["wonderful"]], torch.full((8,), 0.5))
    assert torch.equal(model.net.embed.weight[vocab.ids["awful"]], torch.full((8,), -0.5))


def test_pretrained_embeddings_are_bert_s_and_frozen():
    from transformers import AutoModel

    run = debug_fit("imdb_transformer")
    bert = AutoModel.from_pretrained(FIXTURES / "tiny-bert").get_input_embeddings().weight
    embed = run.model.net.embed.weight
    assert torch.equal(embed, bert) and not embed.requires_grad
    assert 0 < float(run.model.net.position_scale) < 0.1  # sinusoids scaled down to the embeddings' size


def test_predict_texts_and_files_give_label_and_probability(tmp_path, capsys):
    cli(
        "fit",
        "--config",
        config("imdb_bilstm"),
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        *QUIET,
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    review = tmp_path / "review.txt"
    review.write_text("Superb and moving.<br />Loved it.")
    cli(
        "predict",
        "--ckpt_path",
        best,
        '--data.predict_texts=["Dull and tedious."]',
        f"--data.predict_files=[{review}]",
        "--data.data_dir=/nonexistent",
    )  # no dataset needed: the vocabulary is in the checkpoint
    out = capsys.readouterr().out
    path = next(line for line in out.splitlines() if line.startswith("predictions written to "))
    records = [json.loads(line) for line in open(path.removeprefix("predictions written to "))]
    assert [r["input"] for r in records] == ["Dull and tedious.", str(review)]
    assert all(r["output"] in ("negative", "positive") and 0.5 <= r["probability"] <= 1 for r in records)


@pytest.mark.parametrize("text", ["", "   ", "### ***"])
def test_empty_predict_text_fails_in_one_line(tmp_path, capfd, text):
    cli(
        "fit",
        "--config",
        config("imdb_bilstm"),
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        *QUIET,
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    fails_in_one_line(capfd, "predict", "--ckpt_path", best, f'--data.predict_texts=["{text}"]', naming="is empty")


def test_missing_data_glove_and_tokenizer_fail_in_one_line(tmp_path, capfd):
    fit = ["fit", "--config", config("imdb_bilstm"), *TINY, *QUIET]
    fails_in_one_line(capfd, *fit, f"--data.data_dir={tmp_path}", naming="no IMDB reviews in")
    fails_in_one_line(capfd, *fit, "--model.init_args.glove_path=/nonexistent/glove.txt", naming="GloVe file")
    fails_in_one_line(
        capfd,
        *fit,
        "--model.init_args.arch=region_cnn",
        "--model.init_args.glove_path=glove.txt",
        naming="no pretrained",
    )
    # offline (conftest sets HF_HUB_OFFLINE) with nothing cached, as on a machine without internet
    fails_in_one_line(
        capfd,
        "fit",
        "--config",
        config("imdb_distilbert"),
        "--config",
        config("tiny/imdb"),  # the family's tiny data, but not the experiment's tiny local DistilBERT
        *QUIET,
        naming="could not load 'distilbert-base-uncased'",
    )
    bad = tmp_path / "aclImdb/train/pos"
    write_aclimdb(tmp_path, {"train": 3, "test": 3})
    (bad / "notes.txt").write_text("not a review")
    fails_in_one_line(capfd, *fit, f"--data.data_dir={tmp_path}", naming="not an aclImdb review file name")


def test_test_stage_reads_vocabulary_from_the_checkpoint(tmp_path):
    cli("fit", "--config", config("imdb_self_attention"), *TINY, "--trainer.max_epochs=1", *QUIET)
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    checkpoint = torch.load(best, weights_only=True)
    assert checkpoint["ImdbData"]["vocab"][:2] and "vocab" not in checkpoint["datamodule_hyper_parameters"]
    data = ImdbData(data_dir=FIXTURES / "imdb", download=False)
    with pytest.raises(LitlabError, match="built by `fit`"):
        data.vocab_size  # noqa: B018


def test_pretrained_model_trains_in_train_mode():
    """`from_pretrained` returns a model in eval mode and Lightning keeps submodules' modes: dropout must be on."""
    run = debug_fit("imdb_distilbert")
    seen = [m.training for m in run.model.net.modules()]
    assert seen and all(seen)


def test_bilstm_final_states_are_those_of_packed_sequences():
    """The two directions over the padded batch end where packed sequences end: same weights as a packed
    bidirectional nn.LSTM, same final states, two layers deep."""
    torch.manual_seed(0)
    net = BiLSTMClassifier(vocab_size=30, embed_dim=8, hidden=6, layers=2, classes=2, dropout=0.0).eval()
    net.head = torch.nn.Identity()  # the final states themselves
    packed = torch.nn.LSTM(8, 6, num_layers=2, batch_first=True, bidirectional=True)
    for layer in range(2):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(packed, f"{name}_l{layer}").data.copy_(getattr(net.lstm.ahead[layer], f"{name}_l0"))
            getattr(packed, f"{name}_l{layer}_reverse").data.copy_(getattr(net.lstm.back[layer], f"{name}_l0"))
    lengths = torch.tensor([7, 3, 5, 1])
    ids = torch.randint(1, 30, (4, 7)) * (torch.arange(7) < lengths.unsqueeze(1))  # 0 = padding after each review
    with torch.no_grad():
        ours = net(ids, lengths)
        _, (h, _) = packed(pack_padded_sequence(net.embed(ids), lengths, batch_first=True, enforce_sorted=False))
    torch.testing.assert_close(ours, torch.cat([h[-2], h[-1]], dim=1))


def test_bilstm_loads_weights_saved_before_the_lstm_had_a_module_of_its_own():
    net = BiLSTMClassifier(vocab_size=30, embed_dim=8, hidden=6, layers=2, classes=2, dropout=0.0)
    saved = {key.removeprefix("lstm."): value + 1 for key, value in net.state_dict().items()}  # `ahead.0.weight_ih_l0`
    net.load_state_dict(saved)
    torch.testing.assert_close(net.lstm.back[1].bias_hh_l0, saved["back.1.bias_hh_l0"])
    torch.testing.assert_close(net.embed.weight, saved["embed.weight"])


def test_bilstm_max_pooling_reads_only_a_reviews_words():
    torch.manual_seed(0)
    net = BiLSTMClassifier(vocab_size=30, embed_dim=8, hidden=6, layers=2, classes=2, dropout=0.0, pooling="max").eval()
    ids, lengths = torch.randint(1, 30, (2, 9)), torch.tensor([9, 4])
    ids[1, 4:] = 0
    with torch.no_grad():
        torch.testing.assert_close(net(ids, lengths)[1], net(ids[1:, :4], lengths[1:])[0])


def test_adversarial_training_moves_each_reviews_embeddings_uphill_by_epsilon():
    torch.manual_seed(0)
    sizes = {"vocab_size": 50, "pad_id": 0, "num_classes": 2}
    model = built(WordClassifier(embed_dim=8, hidden=6, pooling="max", dropout=0.0, adversarial=2.0, **sizes))
    lengths, y = torch.tensor([9, 4, 6]), torch.tensor([0, 1, 1])
    real = real_tokens(torch.empty(3, 9), lengths)
    ids = torch.randint(2, 50, (3, 9)) * real  # 0 = padding
    read = []  # what the forward LSTM reads: the clean embeddings, then the moved ones
    model.net.lstm.ahead[0].register_forward_pre_hook(lambda module, args: read.append(args[0].detach()))
    loss = model.adversarial_loss(ids, lengths, y)
    clean = torch.nn.functional.cross_entropy(model(ids, lengths), y)
    move = read[1] - read[0]
    torch.testing.assert_close(move.flatten(1).norm(dim=1), torch.full((3,), 2.0))
    assert not move[~real].any()  # padding is never read, so never moved
    random = torch.randn_like(move) * real.unsqueeze(-1)
    random = 2.0 * random / random.flatten(1).norm(dim=1).view(-1, 1, 1)
    with model.net.embed.register_forward_hook(lambda module, args, out: out + random):
        randomly_moved = torch.nn.functional.cross_entropy(model(ids, lengths), y)
    moved = 2 * loss - clean  # the loss is the mean of the clean and the moved reading
    assert moved - clean > 5 * abs(randomly_moved - clean)  # uphill: far more than a random move of that size
    loss.backward()
    assert model.net.embed.weight.grad.abs().sum() > 0
    model.net.embed.weight.requires_grad_(False)  # frozen pretrained vectors are moved all the same
    assert model.adversarial_loss(ids, lengths, y) > clean


def test_adversarial_training_runs_in_a_fit_and_logs_the_moved_loss():
    run = cli(
        "fit",
        "--config",
        config("imdb_bilstm"),
        *TINY,
        "--model.init_args.adversarial=1.0",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        *QUIET,
    )
    assert run.trainer.global_step == 2
    assert torch.isfinite(run.trainer.logged_metrics["train/adversarial_loss"])


def test_word_dropout_makes_a_share_of_training_words_unknown_and_only_in_training(tmp_path, monkeypatch):
    calls = []
    drop_words = WordClassifier.drop_words
    monkeypatch.setattr(WordClassifier, "drop_words", lambda self, *a: calls.append(1) or drop_words(self, *a))
    run = cli(
        "fit",
        "--config",
        config("imdb_bilstm"),
        *TINY,
        "--model.init_args.word_dropout=0.3",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
        *QUIET,
    )
    assert len(calls) == 2  # the two training steps; sanity-check and validation batches read every word
    torch.manual_seed(0)
    lengths = torch.randint(1, 301, (64,))
    real = real_tokens(torch.empty(64, 300), lengths)
    ids = torch.randint(2, 50, (64, 300)) * real  # 0 = padding
    dropped = run.model.drop_words(ids, lengths)
    changed = dropped != ids
    assert (dropped[changed] == WordTokenizer.unknown_id).all()
    assert not changed[~real].any()  # padding stays padding
    assert abs(changed.sum() / lengths.sum() - 0.3) < 0.02
