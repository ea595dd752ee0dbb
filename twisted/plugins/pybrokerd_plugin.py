"""twistd plugin: `twistd -n pybrokerd --store=... --dir=...`.

Kept cheap: every twistd invocation imports every plugin, so the broker is imported lazily.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class PybrokerdServiceMaker:
    tapname = "pybrokerd"
    description = "pybrokerd: an ActiveMQ-compatible STOMP message broker"

    @property
    def options(self):
        from pybrokerd.options import Options
        return Options

    def makeService(self, options):
        from pybrokerd.service import make_service
        return make_service(options)


serviceMaker = PybrokerdServiceMaker()
