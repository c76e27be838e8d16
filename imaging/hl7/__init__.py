"""HL7 v2 with the hospitals' information systems (issue 18 item 5), through the `hl7` library
(python-hl7: its parser and its asyncio MLLP streams), never a parser of our own.

- A HIS registered for an institution (HisEndpoint: its MSH-3/MSH-4, and where results go)
  sends ORM^O01 or OMI^O23 orders to `manage.py hl7_listener`; each becomes a scheduled step
  of the institution's modality worklist (imaging.worklist.schedule_step) and is answered with
  an ACK: AA, or AE/AR with an ERR segment naming the segment and field at fault (orders.py).
- A signed consult report goes back as ORU^R01 (built by consults.hl7) through an outbox row
  (OutboundMessage) written with the signature, sent by Celery with retries, its ACK recorded
  (outbound.py).
"""
