"""The image index as FHIR R4 (Patient, ImagingStudy) and the audit trail as AuditEvent;
shared by the consults' and referrals' mappings (identifiers, names, the patient filter).
Registered with alliance.fhir in imaging.apps."""
