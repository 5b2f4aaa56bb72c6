"""The patient's side: keys the patient controls, sealing and opening readings, wrapping
epoch keys for grantees, and exporting what a reader decrypted as FHIR (docs/privacy.md).

Nothing here runs on a node's behalf: a node never holds a key that opens a reading.
"""
