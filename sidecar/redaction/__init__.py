"""PII redaction: one-pass detectors with checksum validators, operators, policy, streaming."""
