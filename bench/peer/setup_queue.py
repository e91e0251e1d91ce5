"""Create the peer's one queue, reading the benchmark's IMAP mailbox (run in the peer venv).

    python setup_queue.py --box ADDR --password PW --imap-port N [--no-ack]

Acknowledgements: django-helpdesk 2.6.1 has no on/off setting for the "new ticket" mail to
the submitter. create_object_from_email_message() always calls send_info_email(), which
calls Ticket.send({"submitter": ("newticket_submitter", ...)}); send_templated_mail()
then sends nothing, with a warning, when no EmailTemplate of that name exists. The
installed data (migration 0003) ships the template, so acknowledgements are on by default
and --no-ack turns them off the way the admin would: by deleting that template.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peerproj.settings")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--box", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--imap-host", default="127.0.0.1")
    p.add_argument("--imap-port", type=int, required=True)
    p.add_argument("--no-ack", action="store_true")
    args = p.parse_args()
    import django

    django.setup()
    from helpdesk.models import EmailTemplate, Queue

    Queue.objects.all().delete()
    Queue.objects.create(
        title="Bench Support",
        slug="support",
        email_address=args.box,
        allow_email_submission=True,
        email_box_type="imap",
        email_box_host=args.imap_host,
        email_box_port=args.imap_port,
        email_box_ssl=False,  # plain IMAP port; helpdesk issues STARTTLS itself
        email_box_user=args.box,
        email_box_pass=args.password,
        email_box_imap_folder="INBOX",
        email_box_interval=0,
        logging_type="none",
    )
    if args.no_ack:
        EmailTemplate.objects.filter(template_name__iexact="newticket_submitter").delete()
    acks = EmailTemplate.objects.filter(template_name__iexact="newticket_submitter").count()
    print(f"queue ready; newticket_submitter templates: {acks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
