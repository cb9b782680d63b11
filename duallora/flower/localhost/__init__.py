"""The localhost launcher: the kit's Flower app on one machine, every site a real process.

Apart from the app (``duallora.flower``), which is what real sites deploy: this package only
starts and stops Flower processes on 127.0.0.1 for ``duallora flower-local``, notebook 05, the
benchmarks and the tests.

Every module here runs in the launcher's process, except ``worker_forks`` (its own fork
server, whose children become site workers).

- ``launcher``  ``LocalhostFederation``: a SuperLink and N SuperNodes, always torn down.
- ``processes`` each process in its own process group; ports, executables, environment.
- ``run``       ``run_on_localhost``: one site per vendor, submit the app, wait, clean up;
  ``localhost_sites``: the same sites for several runs one after another (``.run``);
  ``site_files`` lists what each site kept on its own disk.
- ``worker_forks``  the site workers forked from one parent that imported torch and the kit
  once (a real site starts ``duallora site-worker`` itself).
"""
