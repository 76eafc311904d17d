"""The ``kd2mcu`` command line. Bad input exits with code 2 and one line on stderr, no traceback."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from kd2mcu import __version__
from kd2mcu.codegen.render import LAYOUTS
from kd2mcu.errors import UserError
from kd2mcu.outputs import check_output_file, write_file_atomically

DEFAULT_NAME = "kd2mcu_model"


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(str(exc))
        except OSError as exc:  # a location kd2mcu could not read or write that no check foresaw
            where = f" {exc.filename}" if exc.filename else ""
            _fail(f"cannot use{where}: {exc.strerror or exc}; check that it exists and that you may read and "
                  "write there")
        except KeyboardInterrupt:
            click.echo("kd2mcu: interrupted (nothing was written)", err=True)
            sys.exit(130)


def _fail(message: str) -> None:
    click.echo(f"kd2mcu: error: {' '.join(message.split())}", err=True)  # always one line
    sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kd2mcu")
def main():
    """Distill a transformer into a tiny int8 LSTM and run it bit-exactly on STM32 microcontrollers."""


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML file with any of the settings (kd2mcu train --show-config prints them all).")
@click.option("--dataset", help="Bundled dataset: basic_motions (default), japanese_vowels, arrow_head, osuleaf, "
                                "pickup_gesture, chinese_reviews.")
@click.option("--data", type=click.Path(path_type=Path), help="Your training data (.npz or .csv) instead.")
@click.option("--test", type=click.Path(path_type=Path), help="Your test data (.npz or .csv).")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder to write.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--seed", type=int, help="Seed of the student, the split and the baseline.")
@click.option("--baseline", is_flag=True, help="Also train the same student without the teacher.")
@click.option("--teacher", type=click.Choice(["auto", "transformer", "pretrained", "onnx", "logits", "rocket", "tfidf"]),
              multiple=True, help="Teacher kind (default auto: a transformer trained here with rocket on sensor data, "
                                  "with tfidf on text); given more than once, an ensemble of those teachers.")
@click.option("--teacher-path", type=click.Path(path_type=Path),
              help="pretrained: model folder; onnx: .onnx file; logits: .npz of teacher logits.")
@click.option("--unlabeled", type=click.Path(path_type=Path),
              help="A kd2mcu label folder: its corpus's rows, with the teacher's logits, join the distillation.")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one setting, e.g. --set distill.alpha=0.5 (repeatable).")
@click.option("--show-config", is_flag=True, help="Print the resolved configuration as TOML and exit.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(config_path, dataset, data, test, out, force, seed, baseline, teacher, teacher_path, unlabeled, settings,
          show_config, quiet):
    """Train a teacher and distill it into a TinyLSTM student; write the run folder OUT.

    OUT holds the student (student.pt, student.onnx), the teacher, the adapter, the data
    normalization or vocabulary, the integer model (model.json), metrics.json and plots. Then:
    kd2mcu build OUT --out BUILD.
    """
    from kd2mcu.train import config as config_mod
    from kd2mcu.train.run import resolve_config, summary
    from kd2mcu.train.run import train as run_train

    cfg = resolve_config(config_path, dataset, data, test, seed, baseline, "+".join(teacher) or None, teacher_path,
                         settings, unlabeled)
    if show_config:
        click.echo(config_mod.to_toml(cfg), nl=False)
        return
    if out is None:
        raise UserError("--out is required: the run folder to write")
    metrics = run_train(cfg, out, force, quiet, inputs=[config_path])
    click.echo(f"trained {out}: {summary(metrics)}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", type=click.Path(path_type=Path),
              help="Calibration data (.npz with x, optional lengths) for a float ONNX model.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Build folder to write.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--name", default=DEFAULT_NAME, show_default=True,
              help="C name of the model: files NAME.c/NAME.h, functions NAME_run, NAME_step, ...")
@click.option("--max-steps", type=click.IntRange(1, 100000), default=None,
              help="Longest sequence the C code accepts (default: the calibration sequences' length).")
@click.option("--target", default="stm32f405", show_default=True,
              help="Board of the firmware project in OUT/firmware: stm32f405, stm32f746, stm32l476 or stm32f205 "
                   "(Cortex-M3: the portable C path).")
@click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default="auto", show_default=True,
              help="LSTM weight layout: fast = int16 pairs fed straight to SMLAD (2x the weight bytes); "
                   "compact = int8, for small parts; auto = fast unless it would crowd the part's flash.")
@click.option("--weights", type=click.Choice(["auto", "flash", "ram", "split"]), default="auto", show_default=True,
              help="Where the weights live on the board: flash, or ram: copied at start-up to its fastest data RAM "
                   "(CCM on the stm32f405), the activation tables with them: no flash wait states on their reads, at the "
                   "cost of that RAM; split: the tables and as many units' weights as fit there, the rest in flash; "
                   "auto = the core-coupled RAM (CCM) where the part has one (split where they do not all fit), "
                   "else flash. kd2mcu report says what was chosen and why.")
def build(model: Path, calib, out: Path, force: bool, name: str, max_steps, target: str, layout: str, weights: str):
    """Quantize MODEL; generate C into OUT/src and an STM32 firmware project into OUT/firmware.

    MODEL is a training run folder (kd2mcu train --out RUN); a float ONNX classifier (LSTM layers,
    optional Gather embedding, Gemm or MatMul+Add head) or a student checkpoint (student.pt),
    quantized post-training on --calib; or an integer model.json from an earlier build.
    """
    from kd2mcu.commands.build import build_from_checkpoint, build_from_intmodel, build_from_onnx, build_from_run

    if model.is_dir():
        if calib is not None:
            raise UserError("--calib is not used with a training run: the run carries its calibration")
        info = build_from_run(model, out, force, name, target, layout, max_steps, weights)
        click.echo(f"built {out}/src from the training run {model} ({info['quantization'].get('method', 'post-training quantization')})")
        _echo_placement(info)
        return
    if model.suffix == ".pt":
        if calib is None:
            raise UserError("--calib is required to quantize a student checkpoint: give an .npz with x (and lengths)")
        info = build_from_checkpoint(model, calib, out, force, name, max_steps, target, layout, weights)
        click.echo(f"built {out}/src from {model}: int8 vs float argmax agreement "
                   f"{info['quantization']['argmax_agreement']:.2%}")
        _echo_placement(info)
        return
    if model.suffix == ".json":
        if calib is not None:
            raise UserError("--calib is only for ONNX models: a model.json is already quantized")
        info = build_from_intmodel(model, out, force, name, target, layout, max_steps, weights)
        click.echo(f"built {out}/src from {model}")
        _echo_placement(info)
        return
    if model.suffix != ".onnx":
        raise UserError(f"{model}: expected a .onnx float model or an integer model.json")
    if calib is None:
        raise UserError("--calib is required to quantize an ONNX model: give an .npz with x (and lengths if padded)")
    info = build_from_onnx(model, calib, out, force, name, max_steps, target=target, layout=layout, weights=weights)
    q = info["quantization"]
    click.echo(f"built {out}/src from {model}: int8 vs float on {q['samples']} calibration samples: "
               f"argmax agreement {q['argmax_agreement']:.2%}, relative L2 error {q['relative_l2_error']:.4f}")
    _echo_placement(info)


def _echo_placement(info: dict) -> None:
    why = info.get("placement", {})
    where = {"flash": "flash", "ram": "RAM (copied from flash at start-up)",
             "split": f"RAM and flash ({info.get('ram_weight_bytes', 0):,} B copied to RAM at start-up)"}[info["weights"]]
    click.echo(f"{info['target']}: {info['layout']} layout: {why.get('layout', '')}")
    click.echo(f"{info['target']}: weights in {where}: {why.get('weights', '')}")


@main.command("export-onnx")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--teacher", "which_teacher", is_flag=True, help="Export the run's transformer teacher instead.")
@click.option("--force", is_flag=True, help="Replace an existing OUTPUT file.")
def export_onnx_cmd(run: Path, output: Path, which_teacher: bool, force: bool):
    """Write RUN's float student (or, with --teacher, its teacher) as a standard ONNX file OUTPUT.

    The student is one LSTM node per layer and a Gemm head (input x, output logits); the teacher takes
    x and lengths and gives logits and the hidden states it aligns, as kd2mcu train --teacher onnx reads.
    """
    from kd2mcu.commands.export_onnx import export_run

    click.echo(export_run(run, output, which_teacher, force))


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--inputs", required=True, type=click.Path(path_type=Path),
              help="Data to run: .npz with x, optional y, lengths, x_raw, texts; or .csv as kd2mcu train reads it "
                   "(raw units, standardized with the model's normalization).")
@click.option("--opt", default="-O2", show_default=True, help="gcc optimization flag for the simulator.")
@click.option("--sanitize", is_flag=True, help="Build with -fsanitize=address,undefined.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--save", type=click.Path(path_type=Path), help="Write q (int8 logits) and logits (float32) here.")
@click.option("--force", is_flag=True, help="Replace an existing --save file.")
def sim(build_dir: Path, inputs: Path, opt: str, sanitize: bool, as_json: bool, save, force: bool):
    """Compile BUILD_DIR/src for the host with gcc and check it bit for bit against the Python reference.

    Exits 0 only when every logit and every final hidden and cell state matches.
    """
    from kd2mcu.commands.sim import simulate

    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise UserError(f"--opt {opt}: use one of -O0, -O1, -O2, -O3, -Os")
    if save is not None:  # refused before the work, not after
        if save.suffix != ".npz":
            raise UserError(f"--save {save}: the file name must end in .npz")
        check_output_file(save, force, [inputs], option="--save")
    result = simulate(build_dir, inputs, opt=opt, sanitize=sanitize)
    q, deq = result.pop("_logits"), result.pop("_dequantized")
    if save is not None:
        write_file_atomically(save, lambda tmp: np.savez(tmp, q=q, logits=deq))
    _warn_clipping(result)
    if as_json:
        click.echo(json.dumps(result))
    else:
        line = f"{result['samples']} samples, {result['mismatches']} mismatching"
        if "accuracy" in result:
            line += f", accuracy {result['accuracy']:.2%}"
        click.echo(line)
        if result["first_mismatch"]:
            click.echo(f"first mismatch: {result['first_mismatch']}")
        if result["predict_mismatches"]:
            click.echo(f"predict: {result['predict_mismatches']} samples where NAME_predict is not the argmax")
        _echo_preprocessing(result, "")
        for key in ("raw_skipped", "utf8_skipped"):
            if key in result:
                click.echo(result[key])
    failed = result["mismatches"] + result["predict_mismatches"] + result.get("raw_mismatches", 0) + \
        result.get("utf8_mismatches", 0) + result.get("utf8_differs_from_x", 0)
    sys.exit(0 if failed == 0 else 1)


def _echo_preprocessing(result: dict, where: str) -> None:
    """The lines of the checks of the C's own pre-processing (sim; emulate, ``where`` = " on the board")."""
    def accuracy(key):
        return f", accuracy {result[key]:.2%}" if key in result else ""

    if "raw_mismatches" in result:
        click.echo(f"raw {result['raw_inputs']}{where}: {result['raw_mismatches']} mismatching "
                   f"({result['raw_input_mismatches']} in the int8 inputs)" + accuracy("raw_accuracy"))
    if "utf8_mismatches" in result:
        extra = f"; {result['utf8_differs_from_x']} differ from the ids in x" if "utf8_differs_from_x" in result else ""
        click.echo(f"UTF-8 texts (NAME_encode_utf8){where}: {result['utf8_mismatches']} mismatching "
                   f"({result['utf8_token_mismatches']} in the token ids{extra})" + accuracy("utf8_accuracy"))


def _warn_clipping(result: dict) -> None:
    """On stderr, when many input values saturated in the int8 input quantization (sim, emulate)."""
    from kd2mcu.commands.build import clipping_warning

    warning = clipping_warning(result)
    if warning:
        click.echo(warning, err=True)


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path),
              help="Data (.npz, or .csv as kd2mcu train reads it) to run; default: the test vectors baked into "
                   "the firmware.")
@click.option("--opt", default="-O2", show_default=True, help="arm-none-eabi-gcc optimization flag.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--portable", is_flag=True, help="Compile the portable C path (as for Cortex-M0+/M3) instead of the "
                                               "DSP path.")
def emulate(build_dir: Path, inputs, opt: str, as_json: bool, portable: bool):
    """Build BUILD_DIR/firmware for its target, run it in qemu-system-arm and check every output bit.

    Exits 0 only on a perfect match with the Python reference. Also measures instructions per
    inference (SysTick under -icount) and the firmware's flash and RAM.
    """
    from kd2mcu.commands.emulate import emulate as run_emulate

    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise UserError(f"--opt {opt}: use one of -O0, -O1, -O2, -O3, -Os")
    result = run_emulate(build_dir, inputs, opt=opt, portable=portable)
    _warn_clipping(result)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['samples']} samples on {result['machine']} ({result['target']}, "
                   f"{result['kernel_path']} path), "
                   f"{result['mismatches']} mismatching; {result['instructions_per_inference']:,} instructions per "
                   f"inference; firmware flash {result['flash_bytes']:,} B, RAM {result['ram_bytes']:,} B"
                   + (f"; accuracy {result['accuracy']:.2%}" if "accuracy" in result else ""))
        if result["first_mismatch"]:
            click.echo(f"first mismatch: {result['first_mismatch']}")
        _echo_preprocessing(result, " on the board")
    failed = result["mismatches"] + result.get("raw_mismatches", 0) + result.get("utf8_mismatches", 0)
    sys.exit(0 if failed == 0 else 1)


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--port", help="The board's serial port (e.g. /dev/ttyACM0), running this build's firmware.")
@click.option("--qemu", is_flag=True, help="Run the board firmware in qemu-system-arm, its USART on a pty, instead "
                                           "of a board (stm32f405, stm32f205).")
@click.option("--baud", type=click.IntRange(1200, 4_000_000), default=115200, show_default=True)
@click.option("--inputs", type=click.Path(path_type=Path),
              help="Data (.npz, or .csv as kd2mcu train reads it) to run; default: the test vectors of the build.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to wait for each answer of the board.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def validate(build_dir: Path, port, qemu: bool, baud: int, inputs, timeout: float, as_json: bool):
    """Stream inputs to the board's serial runner and check every output bit against the reference.

    Builds BUILD_DIR/firmware for the board (it programs nothing: kd2mcu flash does), then sends
    each input vector over the port in checksummed frames and compares the logits and the final
    hidden and cell states the board returns with the Python reference. Exits 0 only on a perfect
    match; reports accuracy and the cycles the board measured.
    """
    from kd2mcu.commands.validate import validate as run_validate

    result = run_validate(build_dir, port, baud, inputs, timeout, qemu)
    _warn_clipping(result)
    if as_json:
        click.echo(json.dumps(result))
    else:
        line = f"{result['samples']} samples on {result['port']} ({result['target']}), {result['mismatches']} mismatching"
        if "accuracy" in result:
            line += f", accuracy {result['accuracy']:.2%}"
        click.echo(line)
        if "cycles_per_inference" in result:
            ms = result["ms_per_inference"]
            click.echo(f"{result['cycles_per_inference']:,.0f} cycles per inference on the board ({result['timer']}) at "
                       f"{result['core_hz'] / 1e6:g} MHz" + (f": {ms:.3f} ms, longest {result['ms_max']:.3f} ms" if ms else ""))
        else:
            click.echo(f"{result['instructions_per_inference']:,.0f} instructions per inference ({result['timing_note']})")
        if result["first_mismatch"]:
            click.echo(f"first mismatch: {result['first_mismatch']}")
    sys.exit(0 if result["mismatches"] == 0 else 1)


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--probe", required=True, type=click.Choice(["stlink", "openocd", "cubeprog"]),
              help="Programmer: st-flash, OpenOCD (ST-LINK interface) or STM32CubeProgrammer.")
@click.option("--dry-run", is_flag=True, help="Print the exact command and do nothing.")
def flash(build_dir: Path, probe: str, dry_run: bool):
    """Build BUILD_DIR/firmware for the board and program it through a probe, verifying the write."""
    from kd2mcu.commands.flash import flash as run_flash

    cmd = run_flash(build_dir, probe, dry_run)
    click.echo(cmd if dry_run else f"programmed and verified: {cmd}")


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def report(build_dir: Path, as_json: bool):
    """Footprint of BUILD_DIR's model on its target (flash, RAM, MACs) and its measured speed; for a
    training run (kd2mcu train --out RUN), its accuracies: teacher, float student, PTQ and QAT int8."""
    from kd2mcu.commands import report as rep
    from kd2mcu.targets.footprint import format_report

    if (build_dir / "metrics.json").is_file():
        m = rep.run_report(build_dir)
        click.echo(json.dumps(m) if as_json else rep.format_run_report(m))
        return
    r = rep.report(build_dir)
    click.echo(json.dumps(r) if as_json else format_report(r))


@main.command()
@click.option("--teacher", "teacher_kind", type=click.Choice(["transformer", "pretrained", "onnx"]), required=True,
              help="transformer: a run's teacher.pt; pretrained: a run's fine-tuned teacher.pt or a Hugging Face "
                   "classifier folder; onnx: an ONNX classifier (a run's teacher.onnx).")
@click.option("--teacher-path", type=click.Path(path_type=Path), required=True,
              help="The run folder, the teacher file, or the Hugging Face folder.")
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Rows to label: .npz (x [N, T, F] or token ids, or texts), .csv (label column optional) or .txt "
                   "(one text per line); labels in it are ignored.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Labels folder: shards and manifest.json; a rerun resumes it.")
@click.option("--ray-address", help="Join a running Ray cluster (auto, or HOST:PORT) instead of starting a local one.")
@click.option("--workers", type=int, help="Ray actors, one teacher each (default: every CPU of the Ray instance); "
                                          "0: one process, without Ray.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Rows per teacher call.")
@click.option("--shard-rows", type=int, default=4096, show_default=True, help="Rows per shard file.")
@click.option("--hidden", is_flag=True, help="Also store the pooled hidden states of the teacher's aligned layers.")
@click.option("--force", is_flag=True, help="Replace labels of another teacher or corpus in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def label(teacher_kind, teacher_path, data, out, ray_address, workers, batch_size, shard_rows, hidden, force, quiet):
    """Label a corpus with a teacher: its logits (and --hidden states) per row, in shards under OUT.

    On Ray (pip install 'kd2mcu[scale]') by default, with one teacher per actor; --workers 0 or no Ray:
    one process. Finished shards survive an interruption and a rerun computes only the rest. Then:
    kd2mcu train --data DATA --teacher logits --teacher-path OUT.
    """
    from kd2mcu.commands import label as lab

    m = lab.run(teacher_kind, teacher_path, data, out, ray_address, workers, batch_size, shard_rows, hidden, force,
                quiet)
    last = m["last_run"]
    speed = f", {last['rows_per_second']:.0f} rows/s" if last["rows_per_second"] else ""
    kept = f" ({m['kept']} shards kept from an earlier run)" if m["kept"] else ""
    workers_text = f", {m['workers']} workers" if m["workers"] else ""
    click.echo(f"labelled {out}: {m['rows']} rows in {m['num_shards']} shards{kept}; {m['engine']}"
               f"{workers_text}{speed}")


if __name__ == "__main__":
    main()
