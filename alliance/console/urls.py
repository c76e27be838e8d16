from django.urls import path

from alliance.console import views

app_name = "manage"

urlpatterns = [
    path("", views.index, name="index"),
    path("institutions/", views.institution_list, name="institution_list"),
    path("institutions/add/", views.institution_add, name="institution_add"),
    path("institutions/<int:pk>/", views.institution_detail, name="institution_detail"),
    path("institutions/<int:pk>/edit/", views.institution_edit, name="institution_edit"),
    path("institutions/<int:pk>/active/", views.institution_active, name="institution_active"),
    path("institutions/<int:institution>/departments/add/", views.department_add, name="department_add"),
    path("institutions/<int:institution>/doctors/add/", views.doctor_add, name="doctor_add"),
    path("institutions/<int:institution>/pools/add/", views.pool_add, name="pool_add"),
    path("institutions/<int:institution>/devices/add/", views.device_add, name="device_add"),
    path("departments/", views.department_list, name="department_list"),
    path("departments/<int:pk>/", views.department_edit, name="department_edit"),
    path("departments/<int:pk>/active/", views.department_active, name="department_active"),
    path("doctors/", views.doctor_list, name="doctor_list"),
    path("doctors/<int:pk>/", views.doctor_edit, name="doctor_edit"),
    path("doctors/<int:pk>/active/", views.doctor_active, name="doctor_active"),
    path("doctors/<int:pk>/move/", views.doctor_move, name="doctor_move"),
    path("doctors/<int:pk>/password/", views.doctor_password, name="doctor_password"),
    path("doctors/<int:pk>/second-factor/reset/", views.doctor_second_factor_reset, name="doctor_second_factor_reset"),
    path("sign-in-locks/", views.sign_in_locks, name="sign_in_locks"),
    path("sign-in-locks/lift/", views.sign_in_lock_lift, name="sign_in_lock_lift"),
    path("pools/", views.pool_list, name="pool_list"),
    path("pools/<int:pk>/", views.pool_edit, name="pool_edit"),
    path("pools/<int:pk>/active/", views.pool_active, name="pool_active"),
    path("devices/", views.device_list, name="device_list"),
    path("devices/<int:pk>/", views.device_edit, name="device_edit"),
    path("devices/<int:pk>/active/", views.device_active, name="device_active"),
    path("specialties/", views.specialty_list, name="specialty_list"),
    path("specialties/add/", views.specialty_add, name="specialty_add"),
    path("alliance/settings/", views.alliance_settings, name="alliance_settings"),
    path("privileges/", views.privilege_list, name="privilege_list"),
    path("privileges/<int:pk>/", views.privilege_decide, name="privilege_decide"),
]
