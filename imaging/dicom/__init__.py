"""The DICOM network protocol (DIMSE): pynetdicom and pydicom only, never the ORM.

scp.py builds the Application Entity, handlers.py binds one handler per event and calls
the injected services (imaging/dimse_services.py on the Django side), status.py names the
statuses, identifiers.py reads request identifiers and names what is sent back.
"""
