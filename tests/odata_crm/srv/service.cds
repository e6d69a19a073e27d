using crm from '../db/schema';
service CrmService @(path: '/odata/v4/crm') {
  entity Accounts as projection on crm.Accounts;
  entity Contacts as projection on crm.Contacts;
}
