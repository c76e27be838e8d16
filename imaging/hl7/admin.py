from django.contrib import admin

from imaging.hl7.models import HisEndpoint, OutboundMessage


@admin.register(HisEndpoint)
class HisEndpointAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("sending_application", "sending_facility", "institution", "host", "port", "active")


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("key", "kind", "endpoint", "state", "attempts", "ack_code", "created_at", "sent_at")
    readonly_fields = [f.name for f in OutboundMessage._meta.fields]
