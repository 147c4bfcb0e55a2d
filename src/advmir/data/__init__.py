"""Datasets in the data contract: waveforms.npy + manifest.csv + classes.json."""
