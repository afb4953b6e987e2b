"""Real peers for tests: an OpenSSH sshd (`sshd.SSHD`) and a moto server (`moto.MotoServer`) on 127.0.0.1."""
