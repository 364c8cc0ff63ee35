"""Typesetting a table's LaTeX as a paper would (pdflatex, a standard article), to check that it
fits and to show it: the overfull boxes pdflatex reports, and a PNG of the page.

    compiled = typeset(Path("results/tiny-llama-wt2/tables/table5.tex"), Path("/tmp/t5"))
    compiled.overfull_pt      # [] where the table fits its column
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# what `\input` of a table needs beside a plain article (tables/latex.py writes the same line at the top)
PREAMBLE = r"\usepackage[T1]{fontenc}\usepackage{booktabs,graphicx,array,longtable}"
OVERFULL = re.compile(r"^Overfull \\hbox \(([0-9.]+)pt too wide\)", re.M)


class LatexMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Typeset:
    pdf: Path
    log: str
    overfull_pt: list[float]


def typeset(tex: Path, workdir: Path, twocolumn: bool = False) -> Typeset:
    """`tex` inside a one-column (or two-column) article, compiled with pdflatex in `workdir`."""
    if shutil.which("pdflatex") is None:
        raise LatexMissing("pdflatex is not installed: `make tex` installs it (Debian: texlive-latex-base, "
                           "texlive-latex-recommended)")
    workdir.mkdir(parents=True, exist_ok=True)
    doc = workdir / f"{tex.stem}_doc.tex"
    doc.write_text("\\documentclass" + ("[twocolumn]" if twocolumn else "") + "{article}\n" + PREAMBLE + "\n"
                   "\\pagestyle{empty}\n\\begin{document}\n\\input{" + str(tex.resolve()) + "}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=workdir,
                          capture_output=True, text=True)
    log = (workdir / f"{doc.stem}.log").read_text(errors="replace")
    if done.returncode != 0:
        errors = [line for line in log.splitlines() if line.startswith("!")]
        raise RuntimeError(f"pdflatex failed on {tex}: {'; '.join(errors[:3]) or done.stdout[-500:]}")
    return Typeset(workdir / f"{doc.stem}.pdf", log, [float(x) for x in OVERFULL.findall(log)])


def to_png(pdf: Path, png: Path, dpi: int = 150) -> Path:
    """The PDF's first page, cropped to its content, as a PNG (pdftoppm, then a crop of white margins)."""
    import numpy as np
    from PIL import Image
    subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile", str(pdf),
                    str(png.with_suffix(""))], check=True)
    img = Image.open(png).convert("L")
    ink = np.argwhere(np.asarray(img) < 250)
    (top, left), (bottom, right) = ink.min(0), ink.max(0)
    pad = dpi // 10
    img.crop((max(left - pad, 0), max(top - pad, 0), right + pad, bottom + pad)).save(png)
    return png
