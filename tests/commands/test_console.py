"""Quiet by default: `prepare` prints its summary, not datatrove's logs (those go to a file, or
to the terminal with --verbose); DeepSpeed's banners and the pinned libraries' deprecation
warnings are filtered; gpt_dist's own output passes untouched."""

import io
import logging
import warnings

from gpt_dist import console
from gpt_dist.cli import main


def test_prepare_prints_a_one_screen_summary_and_keeps_datatrove_logs_in_a_file(tmp_path, capfd):
    assert main(["prepare", "--sample", "--output", str(tmp_path / "quiet")]) == 0
    out, err = capfd.readouterr()
    lines = (out + err).splitlines()
    assert len(lines) <= 25, "\n".join(lines)
    assert f"{tmp_path / 'quiet' / 'train'}: 2 shards" in out and "MinHash dedup: " in out
    assert "PIPELINE" not in out + err and "Stats" not in out + err
    log = tmp_path / "quiet" / ".prepare" / "logs" / "console.log"
    assert f"datatrove's own logs: {log}" in out
    assert "PIPELINE" in log.read_text() and "Processing done for rank=0" in log.read_text()

    assert main(["prepare", "--sample", "--output", str(tmp_path / "verbose"), "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert "PIPELINE" in err and "Stats" in err and "train: 2 shards" in out


def test_deepspeed_banners_and_library_deprecations_are_filtered(capsys):
    console.quiet()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    ds = logging.getLogger("DeepSpeed")
    ds.addHandler(handler)
    try:
        ds.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
        ds.warning("Added key: store_based_barrier_key:1 to store for rank: 0")
    finally:
        ds.removeHandler(handler)
    assert seen == ["Added key: store_based_barrier_key:1 to store for rank: 0"]

    print("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully")
    print("step 5 | loss 9.44 -- DeepSpeed built successfully? a sentence of ours stays")
    assert capsys.readouterr().out == "step 5 | loss 9.44 -- DeepSpeed built successfully? a sentence of ours stays\n"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        console.quiet()  # catch_warnings restores the filters on exit; set them inside it
        warnings.warn_explicit("`torch.distributed.reduce_scatter_tensor` is deprecated", FutureWarning,
                               "c10d_logger.py", 83, module="torch.distributed.c10d_logger")
        warnings.warn_explicit("gpt_dist's own warning", FutureWarning, "config.py", 1, module="gpt_dist.config")
    assert [str(w.message) for w in caught] == ["gpt_dist's own warning"]


def test_banner_filter_passes_partial_lines_on_flush():
    target = io.StringIO()
    stream = console._BannerFreeStream(target)
    stream.write("you> ")
    stream.flush()  # a prompt appears before the user types
    assert target.getvalue() == "you> "
    stream.write("DeepSpeed some_op built successfully\nhello\n")
    assert target.getvalue() == "you> hello\n"
