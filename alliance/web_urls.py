from django.conf import settings
from django.contrib.auth import views as auth_views
from django.urls import include, path

from alliance import figures_views, views

login_view = auth_views.LoginView.as_view(
    redirect_authenticated_user=True, extra_context={"login_failure_limit": settings.AXES_FAILURE_LIMIT}
)

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", login_view, name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_csv, name="audit_csv"),
    path("figures/", figures_views.figures_page, name="figures"),
    path("figures/<slug:section>/<slug:table>.csv", figures_views.figures_csv, name="figures_csv"),
    path("manage/", include("alliance.console.urls")),
    path("account/", include("alliance.account_urls")),
]
