"""The pitch stage: task attacks on pretrained pitch trackers (CREPE, PESTO) on ``synth_melodies``.

- :mod:`advmir.pitch.trackers`: the trackers as differentiable models (waveform -> frame activations).
- :mod:`advmir.pitch.transcribe`: frames -> notes, and the ``mir_eval`` scores.
- :mod:`advmir.pitch.attack`: :class:`PitchPGD`, the attack stage's PGD with per-frame task goals.
- :mod:`advmir.pitch.stage`: the jobs (clean tracking, attacks beside matched noise).
- :mod:`advmir.pitch.plan`, :mod:`advmir.pitch.tables`, :mod:`advmir.pitch.cli`: grid, table, commands.
"""
