"""The PASS/FAIL/SKIP lines both labs' smoke checks print, and their counts.

Shared by tests/lab/openstack (``ovbmc_lab.smoke``) and tests/lab/ironic
(``ovbmc_ironic_lab.smoke``); each lab's entry point puts tests/lab/lib on
PYTHONPATH beside its own package.
"""


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, what, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print("%s %s%s" % ("PASS" if ok else "FAIL", what,
                           " -- %s" % detail if detail else ""), flush=True)
        return bool(ok)

    @staticmethod
    def skip(what, why):
        print("SKIP %s -- %s" % (what, why), flush=True)
