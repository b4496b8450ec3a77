"""What experiments there are: `litlab list`, and model and data classes by their short names."""

from __future__ import annotations

import pytest
from conftest import CONFIG_DIR, EXPERIMENTS

from litlab.__main__ import main
from litlab.catalogue import experiments, readme_rows, uses_short_class_name


def test_list_shows_every_config_with_the_readme_figures(capsys):
    main(["list"])
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines[::2]]
    assert sorted(listed) == sorted(EXPERIMENTS)
    rows = readme_rows(CONFIG_DIR.parent / "README.md")
    xor = lines[2 * listed.index("xor_mlp") : 2 * listed.index("xor_mlp") + 2]
    assert xor[0].split()[1] == "xor" and rows["xor_mlp"]["what"] in xor[0]
    assert f"{rows['xor_mlp']['metric']}: {rows['xor_mlp']['measured']}" in xor[1]


def test_a_config_the_readme_lacks_is_described_by_its_comment(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "mine.yaml").write_text(
        "# My experiment: a small MLP. Target: anything.\nmodel:\n  class_path: my_package.models.MyMLP\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("| config | what | metric | measured |\n|---|---|---|---|\n| `other` | x | y | z |\n")
    assert experiments(configs, readme) == [
        {"config": "mine", "family": "models", "what": "My experiment", "metric": "", "measured": "not measured"}
    ]


@pytest.mark.parametrize(
    ("args", "short"),
    [
        (["fit", "--model=XorMLP"], True),
        (["fit", "--model", "XorMLP"], True),
        (["fit", "--data.help", "XorData"], True),
        (["fit", "--model=lightning_modules.xor.XorMLP"], False),
        (["fit", "--model.hidden=[8]", "--config", "configs/xor_mlp.yaml"], False),
    ],
)
def test_short_class_names_are_recognised(args, short):
    assert uses_short_class_name(args) is short


def test_experiments_by_short_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model=XorMLP", "--data=XorData", "--model.hidden=[8]", "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "class_path: lightning_modules.xor.XorMLP" in printed and "class_path: datamodules.xor.XorData" in printed


def test_help_for_a_class_by_short_name(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "XorMLP"])
    assert "--model.hidden" in capsys.readouterr().out
