"""SeqIO task and mixture registrations (text, code, instruction and evaluation corpora).

Empty until the data issue lands: importing it registers nothing yet.
"""
