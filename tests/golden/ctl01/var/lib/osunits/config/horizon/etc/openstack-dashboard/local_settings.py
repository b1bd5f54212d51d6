# Rendered by osunits for ctl01
import os
from django.utils.translation import gettext_lazy as _
from openstack_dashboard.settings import HORIZON_CONFIG

DEBUG = False
ALLOWED_HOSTS = ["*"]
OPENSTACK_HOST = "keystone"
OPENSTACK_KEYSTONE_URL = "http://%s:5000/v3" % OPENSTACK_HOST
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.MemcachedCache",
        "LOCATION": "memcached:11211",
    },
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
TIME_ZONE = "UTC"
