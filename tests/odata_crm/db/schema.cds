namespace crm;
using { cuid, managed } from '@sap/cds/common';

entity Accounts : cuid, managed {
  accountnumber : String(20);
  name          : String(100) not null;
  emailaddress1 : String(200);
  creditlimit   : Decimal(12, 2);
  contacts      : Composition of many Contacts on contacts.account = $self;
}

entity Contacts : cuid, managed {
  account  : Association to Accounts;
  fullname : String(100) not null;
  email    : String(200);
}

annotate Accounts with { modifiedAt @odata.etag };
annotate Contacts with { modifiedAt @odata.etag };
