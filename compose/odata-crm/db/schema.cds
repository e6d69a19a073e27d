// The docker-compose demo's CRM as an OData v4 service: accounts, leads and contacts with the
// Dataverse-like names of the SQL demo CRM (compose/tablesync.yaml), Guid keys as Dataverse has,
// `modifiedon` set by the service on every write and used as the ETag.
namespace crm;

entity accounts {
  key accountid    : UUID;
  accountnumber    : String(20);
  name             : String(100) not null;
  emailaddress1    : String(200);
  address1_city    : String(60);
  country_code     : String(2);
  creditlimit      : Decimal(12, 2);
  customertypecode : Integer not null;
  modifiedon       : Timestamp @cds.on.insert: $now @cds.on.update: $now @Core.Computed @odata.etag;
}

entity leads {
  key leadid    : UUID;
  fullname      : String(100);
  emailaddress1 : String(200);
  companyname   : String(100);
  modifiedon    : Timestamp @cds.on.insert: $now @cds.on.update: $now @Core.Computed @odata.etag;
}

entity contacts {
  key contactid    : UUID;
  parentcustomerid : UUID;
  fullname         : String(100) not null;
  telephone1       : String(40);
  jobtitle         : String(60);
  modifiedon       : Timestamp @cds.on.insert: $now @cds.on.update: $now @Core.Computed @odata.etag;
}
