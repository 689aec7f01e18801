"""Readers of the datasets' original released formats, and the embedded offline default."""
