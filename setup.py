"""Build script for the one C extension; everything else about the package is in pyproject.toml.

posedistill._jpeg_band decodes a band of JPEG rows with libjpeg(-turbo) (posedistill/csrc/jpeg_band.c,
used by data/topdown.py). It needs the libjpeg headers (Debian: libjpeg-dev, present on the python
images); without them the build of this extension is skipped (optional=True) and the data pipeline
decodes whole images instead: same samples, slower.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("posedistill._jpeg_band", ["posedistill/csrc/jpeg_band.c"],
                             libraries=["jpeg"], optional=True)])
