from django.urls import path

from feedback import views

urlpatterns = [
    path("click", views.click, name="feedback-click"),
    path("rate", views.rate, name="feedback-rate"),
    path("layout", views.layout, name="feedback-layout"),
]
