"""A FHIR R4 API at /fhir/ (issue 18 items 2 and 5): read and search, and one write, a
worklist order created by POST ServiceRequest.

This package is the machinery only: the search parameters, the searchset Bundle, the
CapabilityStatement, the views and the registry. It knows no resource: each app maps its own
objects and registers them in its AppConfig.ready (imaging: Patient, ImagingStudy, AuditEvent,
ServiceRequest for worklist orders; consults: ServiceRequest, Task, DiagnosticReport, Binary;
referrals: ServiceRequest, Task), so that every mapping sits in the layer of what it maps and
asks that layer's access functions.
"""
