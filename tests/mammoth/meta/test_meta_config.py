"""Meta-config -> explicit MAMMOTH config: tasks, paths, sizes, weights, components, groups, devices, errors."""

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from nemo_emmett.config_store import compose_config
from nemo_emmett.data.config import parse_data_config
from nemo_emmett.data.examples import source_lang, source_text, target_lang
from nemo_emmett.data.prepare.cli import main as emmett_prepare
from nemo_emmett.data.shar import count_examples, read_shar_dir
from nemo_emmett.data.transforms import parse_transforms
from nemo_emmett.mammoth.meta.allocation import allocate_devices
from nemo_emmett.mammoth.meta.clusters import cluster_languages, read_distances
from nemo_emmett.mammoth.meta.expand import expand, generated_config, render_config
from nemo_emmett.mammoth.meta.schema import parse_meta_config
from nemo_emmett.mammoth.tasks import ModularModelConfig, ModularTaskConfig, check_modular
from nemo_emmett.models.config import parse_model_config
from tests.conftest import write_audio_source

CONF = Path(__file__).resolve().parents[3] / "nemo_emmett" / "conf"
SIZES = {("en", "de"): 400, ("de", "en"): 200, ("en", "fr"): 100}


def write_lines(path: Path, lang: str, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{lang} line {i}\n" for i in range(n)), encoding="utf-8")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Directional bitext en-de, de-en, en-fr (fr-en lacks its target file), a symmetric de-fr corpus,
    and prepared audio Shar st_en-de and asr_en-en."""
    root = tmp_path_factory.mktemp("corpora")
    for (s, t), n in SIZES.items():
        for lang in (s, t):
            write_lines(root / f"bi/{s}-{t}/train.{lang}", lang, n)
            write_lines(root / f"bi/{s}-{t}/valid.{lang}", lang, 5)
    write_lines(root / "bi/fr-en/train.fr", "fr", 30)
    for lang in ("de", "fr"):
        write_lines(root / f"sym/de-fr/train.{lang}", lang, 50)
    write_audio_source(root / "shar/st_en-de", "speech", 6)
    write_audio_source(root / "shar/asr_en-en", "speech", 4, task="asr")
    return root


def bitext(root: Path, **kw) -> dict:
    return {"name": "bi", "kind": "bitext", "src": f"{root}/bi/{{lang_pair}}/train.{{src_lang}}",
            "tgt": f"{root}/bi/{{lang_pair}}/train.{{tgt_lang}}", **kw}


def symmetric(root: Path, **kw) -> dict:
    return {"name": "sym", "kind": "bitext", "mode": "symmetric", "src": f"{root}/sym/{{sorted_pair}}/train.{{side_a}}",
            "tgt": f"{root}/sym/{{sorted_pair}}/train.{{side_b}}", **kw}


def shar(root: Path, task: str, **kw) -> dict:
    return {"name": "speech", "kind": "shar", "task": task, "path": f"{root}/shar/{task}_{{lang_pair}}", **kw}


def meta(root: Path, **kw) -> dict:
    return {"name": "toy", "languages": ["en", "de", "fr"], "shar_root": str(root / "out"),
            "corpora": [bitext(root, valid_src=f"{root}/bi/{{lang_pair}}/valid.{{src_lang}}",
                               valid_tgt=f"{root}/bi/{{lang_pair}}/valid.{{tgt_lang}}"),
                        symmetric(root)], **kw}


def run(raw: dict):
    return expand(parse_meta_config(raw))


def test_discovery_finds_exactly_the_pairs_with_files(tree):
    x = run(meta(tree))
    assert [t.name for t in x.tasks] == ["mt_en-de", "mt_en-fr", "mt_de-en", "mt_de-fr", "mt_fr-de"]
    x = run(meta(tree, languages=["en", "de", "fr"], corpora=[shar(tree, "st"), shar(tree, "asr", name="asr")]))
    assert [t.name for t in x.tasks] == ["st_en-de", "asr_en-en"]


def test_expansion_gives_paths_sizes_and_weights(tree):
    x = run(meta(tree, temperature=1.0))
    cfg = generated_config(x)
    train = {s["name"]: s for s in cfg["data"]["train_sources"]}
    assert train["mt_en-de"] == {"name": "mt_en-de", "path": "${shar_root}/bi/mt_en-de", "task": "mt",
                                 "source_lang": "en", "target_lang": "de", "dataset": "bi", "num_examples": 400,
                                 "weight": pytest.approx(400 / 800), "introduce_at_step": 0}
    assert {n: s["num_examples"] for n, s in train.items()} == {
        "mt_en-de": 400, "mt_en-fr": 100, "mt_de-en": 200, "mt_de-fr": 50, "mt_fr-de": 50}
    assert {n: s["weight"] for n, s in train.items()} == pytest.approx(
        {"mt_en-de": 0.5, "mt_en-fr": 0.125, "mt_de-en": 0.25, "mt_de-fr": 0.0625, "mt_fr-de": 0.0625})
    assert train["mt_fr-de"]["path"] == "${shar_root}/sym/mt_fr-de"
    assert cfg["shar_root"] == str(tree / "out") and cfg["defaults"] == ["mammoth", "_self_"]
    assert cfg["data"]["demo"] == {"enabled": False}
    assert [(s["name"], s["path"], s["dataset"]) for s in cfg["data"]["validation_sources"]] == [
        (f"val_mt_{p}", f"${{shar_root}}/bi_val/mt_{p}", "bi_val") for p in ("en-de", "en-fr", "de-en")]
    # Temperature 2 on 400 vs 100 examples: 20 : 10.
    x = run(meta(tree, temperature=2.0, corpora=[bitext(tree, pairs=["en-de", "en-fr"])]))
    assert x.weights == pytest.approx({"mt_en-de": 2 / 3, "mt_en-fr": 1 / 3})


def test_shar_corpora_keep_their_folders_and_count_examples(tree):
    x = run(meta(tree, corpora=[shar(tree, "st", valid_path=f"{tree}/shar/st_{{lang_pair}}"),
                                shar(tree, "asr", name="asr", pairs=["en-en"])]))
    train = generated_config(x)["data"]["train_sources"]
    assert [(s["name"], s["path"], s["num_examples"]) for s in train] == [
        ("st_en-de", f"{tree}/shar/st_en-de", 6), ("asr_en-en", f"{tree}/shar/asr_en-en", 4)]
    assert x.prepare == []
    st, asr = x.tasks
    assert st.perception == asr.perception == "perception.full"


def test_prepare_commands_write_exactly_the_folders_the_config_names(tree, tmp_path):
    x = run(meta(tree, shar_root=str(tmp_path / "shar")))
    for command in x.prepare:
        assert emmett_prepare([*command.args, "--no-progress"]) == 0
    cfg = OmegaConf.create(generated_config(x))
    for s in [*cfg.data.train_sources, *cfg.data.validation_sources]:
        examples = list(read_shar_dir(s.path))  # ${shar_root} resolved
        assert (source_lang(examples[0]), target_lang(examples[0])) == (s.source_lang, s.target_lang)
        if "num_examples" in s:
            assert count_examples(s.path) == s.num_examples
    # Symmetric mode: fr-de reads the fr file as its source.
    assert source_text(next(iter(read_shar_dir(tmp_path / "shar/sym/mt_fr-de")))) == "fr line 0"
    assert sorted(p.name for p in (tmp_path / "shar").iterdir()) == ["bi", "bi_val", "sym"]


def test_components_follow_the_sharing_patterns(tree):
    sharing = {"encoder": [{"layers": 2, "pattern": "SRC_LANGUAGE"}, {"layers": 1, "pattern": "GROUP"}],
               "decoder": [{"layers": 1, "pattern": "FULL"}, {"layers": 3, "pattern": "TGT_LANGUAGE"}],
               "embed": "LANGUAGE"}
    x = run(meta(tree, sharing=sharing, groups={"germanic": ["en", "de"], "romance": ["fr"]}))
    t = {t.name: t for t in x.tasks}["mt_en-fr"]
    assert (t.encoder, t.decoder) == (["encoder.0.en", "encoder.1.germanic"], ["decoder.0.full", "decoder.1.fr"])
    assert (t.source_embed, t.target_embed, t.perception) == ("embed.en", "embed.fr", None)
    modular = generated_config(x)["model"]["modular"]
    assert modular["encoder_layers"] == [2, 1] and modular["decoder_layers"] == [1, 3]
    assert modular["groups"] == {"germanic": ["en", "de"], "romance": ["fr"]}
    assert set(modular["tasks"][0]) == {f.name for f in ModularTaskConfig.__dataclass_fields__.values()}


@pytest.mark.parametrize(("decoder", "embed", "tags", "expected"), [
    ("TGT_LANGUAGE", "LANGUAGE", "auto", ""),            # every decoder-side component serves one target
    ("FULL", "LANGUAGE", "auto", "<{target_lang}>"),     # one decoder for all targets
    ("TGT_LANGUAGE", "FULL", "auto", ""),                # a shared vocabulary under target-specific stacks
    ("TGT_LANGUAGE", "LANGUAGE", "always", "<{target_lang}>"),
    ("FULL", "FULL", "never", ""),
])
def test_target_tags(tree, decoder, embed, tags, expected):
    sharing = {"encoder": [{"layers": 1, "pattern": "FULL"}], "decoder": [{"layers": 1, "pattern": decoder}],
               "embed": embed}
    x = run(meta(tree, sharing=sharing, target_tags=tags))
    assert {t.prompt for t in x.tasks} == {expected}


def test_zero_weight_task_is_validated_not_trained(tree):
    weights = {"mt_en-de": 3, "mt_en-fr": 1, "mt_de-en": 0, "mt_de-fr": 0, "mt_fr-de": 0}
    x = run(meta(tree, weights=weights, curriculum={"mt_en-fr": 500}))
    cfg = generated_config(x)
    train = cfg["data"]["train_sources"]
    assert [(s["name"], s["weight"], s["introduce_at_step"]) for s in train] == [
        ("mt_en-de", 0.75, 0), ("mt_en-fr", 0.25, 500)]
    assert "mt_de-en" in [t["name"] for t in cfg["model"]["modular"]["tasks"]]
    assert "val_mt_de-en" in [s["name"] for s in cfg["data"]["validation_sources"]]
    # Prepared: training folders of the trained tasks, validation folders of all; nothing for sym's training.
    assert [c.args[c.args.index("--pairs") + 1] for c in x.prepare] == ["en-de,en-fr", "en-de,en-fr,de-en"]


def test_clustering_from_distances(tree, tmp_path):
    langs = ["en", "fr", "de", "es"]
    d = {"en": {"fr": 0.8, "de": 0.2, "es": 0.9}, "fr": {"de": 0.7, "es": 0.1}, "de": {"es": 0.85}}
    assert cluster_languages(langs, read_distances(d, langs), 2) == {"g0": ["en", "de"], "g1": ["fr", "es"]}
    # Three groups: only the closest pair (fr, es at 0.1) is merged.
    assert cluster_languages(langs, read_distances(d, langs), 3) == {"g0": ["en"], "g1": ["fr", "es"], "g2": ["de"]}
    # A csv with a label column (and an extra language, ignored), and a tsv without one.
    (tmp_path / "d.csv").write_text(",de,en,fr,cs\nde,0,0.2,0.7,0.3\nen,0.2,0,0.8,0.5\nfr,0.7,0.8,0,0.9\n"
                                    "cs,0.3,0.5,0.9,0\n")
    (tmp_path / "d.tsv").write_text("de\ten\tfr\n0\t0.2\t0.7\n0.2\t0\t0.8\n0.7\t0.8\t0\n")
    for path in ("d.csv", "d.tsv"):
        x = run(meta(tree, distances=str(tmp_path / path), num_groups=2,
                     sharing={"decoder": [{"layers": 1, "pattern": "TGT_GROUP"}]}))
        assert x.groups == {"g0": ["en", "de"], "g1": ["fr"]}
        assert {t.name: t.decoder for t in x.tasks}["mt_en-fr"] == ["decoder.0.g1"]


def dec_task(name, tgt):
    return ModularTaskConfig(name=name, source_lang="xx", target_lang=tgt, encoder=["encoder.0.full"],
                             decoder=[f"decoder.0.{tgt}"])


def test_allocation_keeps_tasks_sharing_a_decoder_together():
    # Balancing load alone (alternating devices) would split both decoders.
    tasks = [dec_task("a", "de"), dec_task("b", "de"), dec_task("c", "fr"), dec_task("d", "fr")]
    assert allocate_devices(tasks, dict.fromkeys("abcd", 1.0), 2) == [["a", "b"], ["c", "d"]]
    assert allocate_devices(tasks, dict.fromkeys("abcd", 1.0), 1) == [["a", "b", "c", "d"]]


def test_allocation_balances_load_and_fills_every_device():
    tasks = [dec_task("a", "de"), dec_task("b", "de"), dec_task("c", "de"), dec_task("d", "fr")]
    # a fills device 0 (b would take it past 1.1 * 4.5 / 2), so b and c share device 1; d fits
    # nowhere and goes to the less loaded (a tie: the lower index).
    assert allocate_devices(tasks, {"a": 2, "b": 1, "c": 1, "d": 0.5}, 2) == [["a", "d"], ["b", "c"]]
    # Fewer tasks than devices: the spare device gets a copy of the heavier task.
    assert allocate_devices(tasks[:2], {"a": 2, "b": 1}, 3) == [["a"], ["b"], ["a"]]


def test_meta_config_devices_cover_every_task(tree):
    sharing = {"encoder": [{"layers": 1, "pattern": "FULL"}], "decoder": [{"layers": 1, "pattern": "TGT_LANGUAGE"}]}
    x = run(meta(tree, sharing=sharing, devices=2, weights=dict.fromkeys(
        ["mt_en-de", "mt_en-fr", "mt_de-en", "mt_de-fr", "mt_fr-de"], 1)))
    assert sorted(n for d in x.devices for n in d) == sorted(t.name for t in x.tasks)
    assert any({"mt_en-de", "mt_fr-de"} <= set(d) for d in x.devices)  # both decode with decoder.0.de
    assert generated_config(x)["model"]["modular"]["devices"] == x.devices


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.update(temprature=2.0), "unknown key 'temprature'"),
    (lambda m: m["corpora"][0].update(srcc="x"), r"corpora\[0\] \('bi'\): unknown key 'srcc'"),
    (lambda m: m.update(sharing={"encoder": [{"layers": 1, "pattern": "SRC_LANG"}]}),
     r"sharing.encoder\[0\].pattern: unknown sharing pattern 'SRC_LANG'"),
    (lambda m: m.update(sharing={"embed": "PER_LANGUAGE"}), "sharing.embed: unknown sharing pattern 'PER_LANGUAGE'"),
    (lambda m: m.update(sharing={"decoder": [{"layers": 0, "pattern": "FULL"}]}),
     r"sharing.decoder\[0\].layers must be an integer >= 1"),
    (lambda m: m.update(sharing={"decoder": [{"pattern": "FULL"}]}), r"sharing.decoder\[0\]: missing key 'layers'"),
    (lambda m: m.update(sharing={"decoder": []}), "sharing.decoder: expected a non-empty list"),
    (lambda m: m.update(sharing={"decoder": [{"layers": 1, "pattern": "TGT_GROUP"}]}),
     r"sharing.decoder\[0\].pattern: pattern TGT_GROUP needs language groups"),
    (lambda m: m.update(groups={"germanic": ["en", "de", "nl"], "romance": ["fr"]}),
     "group 'germanic' lists language 'nl', which is not one of the languages"),
    (lambda m: m.update(groups={"germanic": ["en", "de"]}), r"groups leave language\(s\) \['fr'\] without a group"),
    (lambda m: m.update(weights=dict.fromkeys(["mt_en-de", "mt_en-fr", "mt_de-en", "mt_de-fr", "mt_fr-de"], 0)),
     "weights: all task weights are zero"),
    (lambda m: m.update(weights={"mt_en-de": 1}), r"weights: no weight for task\(s\) \['mt_en-fr'"),
    (lambda m: m.update(weights={"mt_xx-de": 1}), "weights: unknown task 'mt_xx-de'"),
    (lambda m: m.update(weights={"mt_en-de": 1}, temperature=2.0), "temperature or weights, not both"),
    (lambda m: m["corpora"].append({**m["corpora"][1], "name": "sym2"}),
     "task 'mt_de-fr' comes from corpora 'sym' and 'sym2': duplicate task names"),
    (lambda m: m["corpora"][0].update(pairs=["en-de", "fr-en"]), r"pair fr-en: file '.*bi/fr-en/train.en' does not exist"),
    (lambda m: m["corpora"][0].update(pairs=["en-xx"]), "pair 'en-xx' uses language"),
    (lambda m: m["corpora"][0].update(valid_src="{lang_pair}/nope.{src_lang}", valid_tgt="{lang_pair}/nope.{tgt_lang}"),
     "validation: pair en-de: file 'en-de/nope.en' does not exist"),
    (lambda m: m["corpora"][0].update(task="st"), "kind bitext prepares mt folders only"),
    (lambda m: m.update(corpora=[{"name": "s", "kind": "shar", "task": "st", "path": "/nowhere/{lang_pair}",
                                  "pairs": ["en-de"]}]), "pair en-de: Shar folder '/nowhere/en-de' does not exist"),
    (lambda m: m.update(corpora=[{"name": "s", "kind": "shar", "task": "st", "path": "/nowhere/{lang_pair}"}]),
     "pairs: all found no direction"),
    (lambda m: m.update(curriculum={"mt_en-de": 10, "mt_en-fr": 10, "mt_de-en": 10, "mt_de-fr": 10, "mt_fr-de": 10}),
     "at least one must start at 0"),
    (lambda m: m.update(curriculum={"mt_zz-de": 10}), "curriculum: unknown task 'mt_zz-de'"),
    (lambda m: m.update(distances={"en": {"de": 0.1}}, num_groups=2), "no distance between 'fr' and 'en'"),
    (lambda m: m.update(num_groups=2), "distances and num_groups go together"),
    (lambda m: m.update(devices=0), "devices must be an integer >= 1"),
    (lambda m: m.update(target_tags="sometimes"), "target_tags 'sometimes' is not one of"),
    (lambda m: m.pop("languages"), "missing key 'languages'"),
])
def test_bad_meta_configs_name_the_culprit(tree, change, message):
    raw = meta(tree)
    change(raw)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(raw)


def test_generated_config_composes_with_hydra(tree, tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    if not (conf / "mammoth.yaml").exists():  # a stand-in base until conf/mammoth.yaml is written
        (conf / "mammoth.yaml").write_text("# stand-in\ndefaults:\n  - data: default\n  - _self_\nname: mammoth\n"
                                           "model_class: nemo_emmett.mammoth.modular.ModularTranslation\nmodel: {}\n")
    x = run(meta(tree, devices=2, curriculum={"mt_de-en": 100}))
    (conf / "toy.yaml").write_text(render_config(x, header=["generated"]))
    cfg = compose_config("toy", config_dir=conf)
    data = parse_data_config(cfg.data)
    assert [s["path"] for s in data.train_sources][0] == f"{tree}/out/bi/mt_en-de"
    assert {s["name"]: s["introduce_at_step"] for s in data.train_sources}["mt_de-en"] == 100
    model = parse_model_config(cfg.model, ModularModelConfig)
    check_modular(model.modular)
    assert [t.name for t in model.modular.tasks] == [t.name for t in x.tasks]
    assert model.modular.devices == x.devices and cfg.model_class.endswith("ModularTranslation")


def test_rendered_yaml_round_trips(tree):
    x = run(meta(tree))
    text = render_config(x, header=["line one", "line two"], search_path="/somewhere/conf")
    assert text.startswith("# line one\n# line two\n")
    cfg = yaml.safe_load(text)
    assert cfg == generated_config(x, "/somewhere/conf")
    assert cfg["hydra"] == {"searchpath": ["file:///somewhere/conf"]}


def test_transforms_are_written_for_every_source_or_per_corpus(tree):
    everywhere = [{"name": "filter_length", "max_tokens": 50}]
    raw = meta(tree, transforms=everywhere)
    raw["corpora"][1]["transforms"] = [{"name": "filter_ratio", "max_ratio": 2.0}]  # the symmetric corpus 'sym'
    cfg = generated_config(run(raw))
    assert cfg["data"]["transforms"] == everywhere
    train = {s["name"]: s for s in cfg["data"]["train_sources"]}
    assert train["mt_fr-de"]["transforms"] == [{"name": "filter_ratio", "max_ratio": 2.0}]  # sym's own list
    assert "transforms" not in train["mt_en-de"]  # bi: data.transforms applies
    assert [type(x).__name__ for x in parse_transforms(train["mt_fr-de"]["transforms"], "t")] == ["FilterRatio"]
    assert "transforms" not in generated_config(run(meta(tree)))["data"]


@pytest.mark.parametrize(("where", "entry", "message"), [
    ("meta", {"name": "filter_lenght"}, r"transforms\[0\]: unknown transform name 'filter_lenght'"),
    ("corpus", {"name": "filter_length", "min_tokens": 5, "max_tokens": 2},
     r"corpora\[1\] \('sym'\)\.transforms\[0\].*min_tokens=5 > max_tokens=2"),
])
def test_bad_transforms_in_a_meta_config_are_named(tree, where, entry, message):
    raw = meta(tree)
    if where == "meta":
        raw["transforms"] = [entry]
    else:
        raw["corpora"][1]["transforms"] = [entry]
    with pytest.raises(ValueError, match=message):
        parse_meta_config(raw)
